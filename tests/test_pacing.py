"""The senders keep ``MAILER_RATE_LIMITS`` and the pauses relays ask for (issue 15), in one process.

Real processes sharing one limit, and a real relay answering 454, are in ``test_pacing_processes.py``.
"""

import datetime
import smtplib
import time

import django
import pytest
from anymail.exceptions import AnymailAPIError
from django.core import mail
from django.db import transaction
from django.utils import timezone

from mailer import claims, pacing, ratelimits, ratewindows
from mailer.engine import send_all
from mailer.failures import classify
from mailer.models import Message, MessageLog, RateReservation, RelayState
from mailer.routing import routes as routing_routes
from tests.support.backends import HERE, SEND_TIMES, WALL_SEND_TIMES
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 12, 1, 8, 0, tzinfo=datetime.UTC)
THROTTLED = smtplib.SMTPRecipientsRefused({"to@example.com": (454, b"4.7.0 Throttling failure: Maximum sending rate")})


@pytest.fixture(autouse=True)
def fresh_purge_memory():
    ratewindows._last_purge.clear()
    yield
    ratewindows._last_purge.clear()


def sent_subjects():
    return [email.subject for email in mail.outbox]


# --- Limits ---------------------------------------------------------------------------------------------


def test_a_pass_ends_at_the_limit_and_says_when_the_rest_can_go(settings):
    settings.MAILER_RATE_LIMITS = {"default": ["3/m"]}
    for n in range(5):
        queue(f"m{n}")

    result = send_all()

    assert sent_subjects() == ["m0", "m1", "m2"]
    assert 50 < result.paced_for <= 60.05  # a minute, and the slack (mailer.pacing.SLACK)
    assert "rate limits: the rest can go in" in str(result)
    assert Message.objects.count() == 2
    # The next run (cron) sends nothing until the window allows, and touches no message meanwhile.
    assert send_all().sent == 0
    assert sent_subjects() == ["m0", "m1", "m2"]
    assert list(Message.objects.values_list("attempts", flat=True)) == [0, 0]


def test_a_pass_that_waits_for_the_window_sends_everything_within_the_limit(settings):
    settings.MAILER_RATE_LIMITS = {"default": ["4/s"]}
    settings.MAILER_EMAIL_BACKEND = f"{HERE}.TimingBackend"
    SEND_TIMES.clear()
    for n in range(10):
        queue(f"m{n}")

    started = time.monotonic()
    result = send_all(wait_for_limits=True)

    assert result.sent == 10 and result.paced_for is None
    times = list(SEND_TIMES)
    assert len(times) == 10
    # Ten messages at four a second: the tenth cannot go before two windows have passed.
    assert time.monotonic() - started >= 2.0
    for i, at in enumerate(times):
        window = [t for t in times[i:] if t - at < 1.0]
        assert len(window) <= 4, f"{len(window)} messages within 1 s of message {i}"


def test_tokens_a_batch_did_not_use_are_given_back(settings):
    settings.MAILER_RATE_LIMITS = {"default": ["100/h"]}
    settings.MAILER_SENDER_CONNECTIONS = 4  # reserves four at a time
    queue("only one")

    assert send_all().sent == 1

    assert sum(RateReservation.objects.values_list("count", flat=True)) == 1


def test_messages_of_a_relay_without_limits_are_not_held_back(settings):
    settings.MAILER_RATE_LIMITS = {}
    for n in range(30):
        queue(f"m{n}")

    assert send_all().sent == 30
    assert not RateReservation.objects.exists()
    assert not RelayState.objects.exists()


# --- The claim leaves out closed relays ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mailers", "expected"),
    [
        (None, ["default", "bulk", "alerts"]),
        (("except", frozenset({"bulk"})), ["default", "alerts"]),
        (("only", frozenset({"alerts"})), ["alerts"]),
        (("only", frozenset()), []),
    ],
)
def test_a_claim_takes_only_the_mailers_it_is_given(mailers, expected):
    queue("default")
    queue("bulk", mailer="bulk")
    queue("alerts", mailer="alerts")
    with transaction.atomic():
        claimed = claims.Claimer(None, "default")(10, None, mailers)
        assert [m.mailer or "default" for m in claimed] == expected


# --- Pauses ---------------------------------------------------------------------------------------------


def test_a_throttling_reply_pauses_the_relay_without_failing_the_message(settings, failures):
    settings.MAILER_RETRY_DELAY = 30
    failures["slow down"] = THROTTLED
    queue("slow down")
    queue("next")

    result = send_all()

    message = Message.objects.order_by("pk").first()
    assert message.attempts == 0 and message.not_before is None and message.last_error is None
    assert not MessageLog.objects.filter(result="2").exists()  # no failure logged
    assert result.failed == 0 and result.deferred == 0 and 25 < result.paced_for <= 30
    state = RelayState.objects.get(relay="default")
    assert state.pause_seconds == 30
    assert Message.objects.count() == 2  # "next" waits for the pause too
    # Another pass (another sender) sees the pause and leaves the relay alone.
    failures.clear()
    assert send_all().sent == 0
    RelayState.objects.update(paused_until=timezone.now() - datetime.timedelta(seconds=1))
    assert send_all().sent == 2


def test_pauses_double_while_the_relay_keeps_asking_and_start_again_after_a_quiet_spell(settings):
    settings.MAILER_RETRY_DELAY = 10
    settings.MAILER_RETRY_MAX_DELAY = 35
    second = datetime.timedelta(seconds=1)

    assert ratelimits.pause("default", now=T0) == T0 + 10 * second
    assert ratelimits.pause("default", now=T0 + 5 * second) == T0 + 10 * second  # paused already: kept
    assert ratelimits.pause("default", now=T0 + 12 * second) == T0 + 32 * second  # right after it: 20 s
    assert ratelimits.pause("default", now=T0 + 33 * second) == T0 + 68 * second  # 40 s, capped at 35
    assert ratelimits.pause("default", now=T0 + 500 * second) == T0 + 510 * second  # quiet for long: 10 s again
    assert ratelimits.pause("default", 3, now=T0 + 600 * second) == T0 + 603 * second  # Retry-After: 3 s
    assert ratelimits.pauses(T0 + 601 * second) == {"default": T0 + 603 * second}
    assert ratelimits.pauses(T0 + 604 * second) == {}


class _Response:
    def __init__(self, headers):
        self.headers = headers
        self.status_code = 429
        self.text = "slow down"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None)],
)
def test_an_esps_429_is_throttling_with_its_retry_after(header, expected):
    headers = {"Retry-After": header} if header is not None else {}
    exc = AnymailAPIError("too many requests", status_code=429, response=_Response(headers))

    failure = classify(exc)

    assert failure.throttled and failure.transient
    assert failure.retry_after == expected


def test_a_retry_after_given_as_a_date_counts_from_now():
    when = timezone.now() + datetime.timedelta(seconds=90)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    exc = AnymailAPIError("too many requests", status_code=429, response=_Response({"Retry-After": header}))

    assert 85 < classify(exc).retry_after <= 90


def test_the_slack_makes_each_window_a_little_longer():
    limit = ratelimits.Limit(2, 1)
    second = datetime.timedelta(seconds=1)

    assert ratelimits.reserve("default", 2, now=T0, limits=[limit], slack=0.05).granted == 2
    grant = ratelimits.reserve("default", 1, now=T0 + second, limits=[limit], slack=0.05)

    assert grant.granted == 0
    assert grant.retry_at == T0 + datetime.timedelta(seconds=1.05)
    assert ratelimits.reserve("default", 1, now=grant.retry_at, limits=[limit], slack=0.05).granted == 1


def test_an_sdk_throttling_error_without_a_status_is_throttling_too():
    exc = AnymailAPIError(
        "An error occurred (Throttling) when calling the SendEmail operation: Maximum sending rate exceeded."
    )

    failure = classify(exc)

    assert failure.throttled and failure.transient and failure.code is None
    assert not classify(AnymailAPIError("Connection refused")).throttled


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is new in Django 6.1")
def test_a_relay_at_its_limit_waits_while_the_others_send(settings, smtp_server, second_smtp_server):
    smtp = "django.core.mail.backends.smtp.EmailBackend"
    settings.MAILERS = {
        "default": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "transactional"}},
        "bulk": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "bulk-relay"}},
        "transactional": {"BACKEND": smtp, "OPTIONS": {"host": smtp_server.host, "port": smtp_server.port}},
        "bulk-relay": {"BACKEND": smtp, "OPTIONS": {"host": second_smtp_server.host, "port": second_smtp_server.port}},
    }
    del settings.MAILER_EMAIL_BACKEND
    settings.MAILER_RATE_LIMITS = {"bulk-relay": ["2/m"]}
    for n in range(4):
        mail.send_mail(f"bulk {n}", "N", "f@example.org", ["b@example.org"], using="bulk")
    for n in range(3):
        mail.send_mail(f"receipt {n}", "R", "f@example.org", ["a@example.org"])

    result = send_all()

    assert result.sent == 5
    assert len(smtp_server.messages) == 3 and len(second_smtp_server.messages) == 2
    assert 55 < result.paced_for <= 60.05  # when the bulk relay's window opens again
    # A new receipt goes at once; the bulk mail left waits for its window, untouched.
    mail.send_mail("receipt 3", "R", "f@example.org", ["a@example.org"])
    again = send_all()
    assert again.sent == 1 and again.paced_for is not None
    assert list(Message.objects.values_list("mailer", "attempts")) == [("bulk", 0), ("bulk", 0)]


def test_a_token_held_while_the_connection_opened_is_renewed_before_the_mail_goes(settings):
    """A slow first connection must not make a token stamped 0.2 s ago count in the wrong window at the relay."""
    settings.MAILER_RATE_LIMITS = {"default": ["4/s"]}
    settings.MAILER_EMAIL_BACKEND = f"{HERE}.SlowConnectingBackend"
    WALL_SEND_TIMES.clear()
    for n in range(3):
        queue(f"m{n}")

    assert send_all(wait_for_limits=True).sent == 3

    stamps = sorted(at.timestamp() for at in RateReservation.objects.values_list("at", flat=True))
    assert sum(RateReservation.objects.values_list("count", flat=True)) == 3  # the stale token went back
    first_sent = WALL_SEND_TIMES[0]
    assert 0 <= first_sent - stamps[0] < 0.05 + 0.02, (first_sent, stamps)


def test_a_relay_far_from_its_limit_is_reserved_for_several_batches_at_once(settings):
    settings.MAILER_RATE_LIMITS = {"default": ["100000/s"]}
    settings.MAILER_COMMIT_BATCH_SIZE = 10
    for n in range(50):
        queue(f"m{n}")

    assert send_all().sent == 50

    # Five batches; fresh tokens carry over from one to the next (slower machines may need a second one).
    assert RateReservation.objects.count() < 5
    assert sum(RateReservation.objects.values_list("count", flat=True)) == 50  # the rest went back at the end


def test_a_sender_far_from_a_high_limit_keeps_its_tokens_past_the_slack(settings, smtp_settings, slow_smtp_server):
    """Tokens older than SLACK still serve while a sender holds at most 1% of a second's worth (STALE_SHARE)."""
    # A sender may hold up to 1,000 past the slack. The relay is "default", or the "smtp" alias with MAILERS.
    settings.MAILER_RATE_LIMITS = {"default": ["100000/s"], "smtp": ["100000/s"]}
    settings.MAILER_COMMIT_BATCH_SIZE = 10  # ten batches; the relay takes 4 ms a message
    for n in range(100):
        queue(f"m{n}")

    assert send_all().sent == 100  # in 0.4 s or more

    # One reservation of 1,000 for the whole pass, the 900 left given back at its end. Renewing tokens each
    # 50 ms (SLACK), as for a low limit, took eight reservations or more.
    assert list(RateReservation.objects.values_list("count", flat=True)) == [100]
    assert len(slow_smtp_server.messages) == 100


def test_stale_tokens_are_renewed_under_one_lock(settings, monkeypatch):
    """Tokens too old to carry go back in the transaction that takes the new ones: one lock of the relay's row."""
    settings.MAILER_RATE_LIMITS = {"default": ["100/h"]}  # too few per batch to carry: renewed every batch
    settings.MAILER_COMMIT_BATCH_SIZE = 1
    settings.MAILER_SENDER_CONNECTIONS = 2  # reserves two, uses one per batch
    locks = []
    real_lock = ratewindows.lock
    monkeypatch.setattr(ratewindows, "lock", lambda relay, using: locks.append(relay) or real_lock(relay, using))
    RelayState.objects.create(relay="default")  # as after the relay's first reservation ever
    for n in range(3):
        queue(f"m{n}")

    assert send_all().sent == 3

    # One lock per claim (three batches and the empty claim that ends the pass) and one for the last give-back;
    # a give-back and a reservation apart took two per claim.
    assert len(locks) == 5
    assert sum(RateReservation.objects.values_list("count", flat=True)) == 3


def test_a_pause_another_sender_records_is_seen_within_a_second(settings, monkeypatch):
    settings.MAILER_RATE_LIMITS = {}
    calls = []
    real = ratelimits.pauses
    monkeypatch.setattr(ratelimits, "pauses", lambda now=None: calls.append(now) or real(now))
    pacer = pacing.Pacer(routing_routes(), 1)
    clock = [100.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])

    assert pacer.allowance(10) == 10 and len(calls) == 1
    ratelimits.pause("default")  # another sender
    clock[0] += 0.5
    assert pacer.allowance(10) == 10 and len(calls) == 1  # not read again yet
    clock[0] += 0.6
    assert pacer.allowance(10) == 0 and len(calls) == 2
