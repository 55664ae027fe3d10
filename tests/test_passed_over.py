"""Issue 12 item 8: messages the error handler leaves queued ("deferred" without deferring) keep a pass linear.

The handler of docs/errors.rst returns ``(connection, "deferred")`` for a rate-limited message and
leaves it queued. The pass must not try such a message again, and must not make each later claim
bigger (an ever-growing list of excluded ids) nor build a new statement for each claim.
"""

from collections import Counter

import pytest
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db import connection

import mailer
from mailer import claims
from mailer.engine import handle_delivery_exception, send_all
from mailer.models import PRIORITY_MEDIUM, Message

pytestmark = pytest.mark.django_db

THIS = __name__
HANDLED: Counter = Counter()


class RateLimited(Exception):
    pass


class RateLimitedBackend(LocmemBackend):
    """Refuses every message whose subject starts with "limited", as a provider's rate limit would."""

    def send_messages(self, messages):
        for message in messages:
            if message.subject.startswith("limited"):
                raise RateLimited("slow down")
        return super().send_messages(messages)


def handle_delivery_error(connection, message, exc):
    """The example handler of docs/errors.rst, for the rate-limit part."""
    HANDLED[message.pk] += 1
    if isinstance(exc, RateLimited):
        return connection, "deferred"  # not deferred: the next run tries it again
    return handle_delivery_exception(connection, message, exc)


@pytest.fixture
def rate_limited(settings):
    settings.MAILER_EMAIL_BACKEND = f"{THIS}.RateLimitedBackend"
    settings.MAILER_ERROR_HANDLER = f"{THIS}.handle_delivery_error"
    HANDLED.clear()
    yield
    HANDLED.clear()


def claims_run(monkeypatch):
    """Record the parameters of every claim query and count the claim statements built."""
    built = []
    build = claims.Claimer.statement

    def counting(self, *args, **kwargs):
        built.append(args)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(claims.Claimer, "statement", counting)
    queries = []

    def record(execute, sql, params, many, context):
        if "ORDER BY" in sql and "mailer_message" in sql:
            queries.append(len(params or ()))
        return execute(sql, params, many, context)

    return built, queries, record


@pytest.mark.parametrize(
    "interval",
    [
        3600,  # every claim takes a full batch: the claim size does not adapt
        0,  # a relay slower than the commit interval: after the first, every claim takes one message
    ],
)
def test_a_pass_over_rate_limited_messages_keeps_each_claim_bounded(rate_limited, monkeypatch, settings, interval):
    settings.MAILER_COMMIT_INTERVAL = interval
    total = 2000
    mailer.send_mass_mail(
        [(f"limited{n}" if n % 10 else f"ok{n}", "body", "from@example.com", ["to@example.com"]) for n in range(total)],
    )
    built, queries, record = claims_run(monkeypatch)
    with connection.execute_wrapper(record):
        result = send_all()
    assert result.sent == total // 10
    assert result.deferred == total - total // 10
    # Every rate-limited message was tried once in this pass, and stays queued as it was.
    assert len(HANDLED) == total - total // 10 and set(HANDLED.values()) == {1}
    assert Message.objects.count() == total - total // 10
    assert set(Message.objects.values_list("priority", flat=True)) == {PRIORITY_MEDIUM}
    # Each claim's SQL has a bounded number of parameters, and only a few statements are ever built.
    assert len(queries) >= total // 100
    assert max(queries) <= 12, sorted(queries)[-5:]
    # The first claim, and those after a position, for each claim size: 100, and 1 when the size adapts.
    assert len(built) <= (2 if interval else 4), built
