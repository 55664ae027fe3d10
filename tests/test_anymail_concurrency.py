"""Two webhooks reporting the same address at once add one entry, and neither fails (real threads, each on its
own database connection, through django-anymail's webhook view)."""

import threading

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.db import connection, transaction
from django.test import Client

from mailer.models import DontSendEntry
from tests.support.esp_webhooks import post_postmark, postmark_bounce, webhook_settings
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor == 'sqlite'", reason="SQLite takes one writer at a time"),
]


def in_thread(target, errors):
    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_many_webhooks_at_once_add_one_entry(settings):
    webhook_settings(settings)
    cases = ["ann@example.org", "ANN@example.org", "Ann@Example.org", "ann@EXAMPLE.ORG"] * 2
    start, statuses, errors = threading.Barrier(len(cases)), [], []

    def post(address):
        client = Client()
        start.wait()
        statuses.append(post_postmark(client, postmark_bounce(address)).status_code)

    threads = [in_thread(lambda a=a: post(a), errors) for a in cases]
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert statuses == [200] * len(cases)
    assert list(DontSendEntry.objects.values_list("to_address", "reason")) == [("ann@example.org", "bounced")]


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="waits are read from PostgreSQL's pg_stat_activity")
def test_the_second_insert_waits_for_the_first_and_adds_nothing():
    """The race itself: B checks the list while A's entry is not committed, so B inserts too, and waits on the
    unique index until A commits; then B's insert conflicts, and B returns as if the address had been listed."""
    a_inserted, a_may_commit, errors = threading.Event(), threading.Event(), []

    def send(address, event_id):
        event = AnymailTrackingEvent(event_type="bounced", recipient=address, event_id=event_id)
        tracking.send(sender=object, event=event, esp_name="Postmark")

    def first():
        with transaction.atomic():  # as a webhook view under ATOMIC_REQUESTS
            send("ann@example.org", "a")
            a_inserted.set()
            a_may_commit.wait(30)

    def blocked_sessions():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0]

    a = in_thread(first, errors)
    assert a_inserted.wait(30)
    b = in_thread(lambda: send("ANN@example.org", "b"), errors)
    wait_until(blocked_sessions, message="the second insert never waited for the first")
    a_may_commit.set()
    for thread in (a, b):
        thread.join(30)
    assert errors == []
    assert list(DontSendEntry.objects.values_list("to_address", "event_id")) == [("ann@example.org", "a")]


def test_two_soft_bounces_at_once_reach_the_limit(settings):
    """A soft bounce is counted once it is committed: here the first one commits after the second was counted
    (the second saw only itself), and the first one's count, taken after its commit, sees both."""
    settings.MAILER_SOFT_BOUNCE_LIMIT = (2, 7)
    a_recorded, a_may_commit, errors = threading.Event(), threading.Event(), []

    def soft_bounce(event_id):
        event = AnymailTrackingEvent(event_type="deferred", recipient="ann@example.org", event_id=event_id)
        tracking.send(sender=object, event=event, esp_name="Mailgun")

    def first():
        with transaction.atomic():  # as a webhook view under ATOMIC_REQUESTS
            soft_bounce("a")
            a_recorded.set()
            a_may_commit.wait(30)

    a = in_thread(first, errors)
    assert a_recorded.wait(30)
    b = in_thread(lambda: soft_bounce("b"), errors)
    b.join(30)
    assert DontSendEntry.objects.count() == 0  # the second counted one committed soft bounce: its own
    a_may_commit.set()
    a.join(30)
    assert errors == []
    assert list(DontSendEntry.objects.values_list("to_address", "reason", "event_id")) == [
        ("ann@example.org", "soft_bounces", "a")
    ]
