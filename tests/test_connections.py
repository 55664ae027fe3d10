"""``MAILER_SENDER_CONNECTIONS``: one sender handing its batch to the backend through several connections at once.

Over SMTP to a relay on loopback that takes 20 ms per message, and with the in-process failing backend of
``tests/test_engine.py`` for errors. Whatever the number of connections, every message is delivered once.
"""

import smtplib
import threading
from collections import Counter

import pytest

from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog
from tests.support.backends import sent_subjects
from tests.support.queueing import queue
from tests.support.smtp_sink import slow_down

pytestmark = pytest.mark.django_db


@pytest.fixture
def relay(smtp_settings):
    return slow_down(smtp_settings, 0.02)


def queue_numbered(count):
    for n in range(count):
        queue(f"m{n:03}", minutes_ago=count - n, headers={"X-Seq": str(n)})


def delivered(server):
    return Counter(int(m.message["X-Seq"]) for m in server.messages)


def test_four_connections_deliver_each_message_once_and_at_once(settings, relay):
    settings.MAILER_SENDER_CONNECTIONS = 4
    queue_numbered(40)

    result = send_all()

    assert (result.sent, result.deferred, result.failed) == (40, 0, 0)
    assert delivered(relay) == Counter(range(40))
    assert relay.connections == 4  # one per slot, each reused
    assert relay.busy_max > 1  # deliveries overlapped
    assert Message.objects.count() == 0
    logs = MessageLog.objects.filter(result=RESULT_SUCCESS)
    assert logs.count() == 40 == len(set(logs.values_list("message_id", flat=True)))


def test_one_connection_by_default(relay):
    queue_numbered(5)
    assert send_all().sent == 5
    assert (relay.connections, relay.busy_max) == (1, 1)


def test_throttle_sends_one_at_a_time_whatever_the_connections(settings, relay):
    settings.MAILER_SENDER_CONNECTIONS = 4
    settings.MAILER_EMAIL_THROTTLE = 0.001
    queue_numbered(4)
    assert send_all().sent == 4
    assert relay.busy_max == 1


def test_max_batch_is_not_overshot_by_deliveries_in_flight(settings, relay):
    settings.MAILER_SENDER_CONNECTIONS = 4
    settings.MAILER_EMAIL_MAX_BATCH = 5
    queue_numbered(20)
    assert send_all().sent == 5
    assert len(relay.messages) == 5
    assert Message.objects.count() == 15


def test_a_transient_failure_holds_back_that_message_only(settings, failures):
    settings.MAILER_SENDER_CONNECTIONS = 3
    for n in range(9):
        queue(f"m{n}", minutes=n)
    failures["m4"] = smtplib.SMTPRecipientsRefused({"to@example.com": (451, b"4.2.2 mailbox full")})

    result = send_all()

    assert (result.sent, result.deferred) == (8, 1)
    assert sorted(sent_subjects()) == [f"m{n}" for n in range(9) if n != 4]
    assert [(m.subject, m.attempts) for m in Message.objects.waiting_for_retry()] == [("m4", 1)]
    assert Message.objects.count() == 1
    assert MessageLog.objects.get(result=RESULT_FAILURE).subject == "m4"


def test_a_permanent_failure_removes_that_message_only(settings, failures):
    settings.MAILER_SENDER_CONNECTIONS = 3
    for n in range(9):
        queue(f"m{n}", minutes=n)
    failures["m4"] = smtplib.SMTPRecipientsRefused({"to@example.com": (550, b"5.1.1 no such user")})

    result = send_all()

    assert (result.sent, result.deferred, result.failed) == (8, 0, 1)
    assert sorted(sent_subjects()) == [f"m{n}" for n in range(9) if n != 4]
    assert not Message.objects.exists()
    assert MessageLog.objects.get(result=RESULT_FAILURE).subject == "m4"


def test_a_poison_message_keeps_what_was_in_flight_and_the_next_run_sends_the_rest(settings, failures):
    settings.MAILER_SENDER_CONNECTIONS = 3
    for n in range(12):
        queue(f"m{n:02}", minutes=n)
    failures["m02"] = ValueError("poison")

    with pytest.raises(ValueError, match="poison"):
        send_all()
    first = Counter(sent_subjects())
    poison = Message.objects.get(priority=PRIORITY_DEFERRED)
    assert poison.subject == "m02"
    assert "ValueError: poison" in MessageLog.objects.get(result=RESULT_FAILURE).log_message
    # Whatever was handed to the backend before the poison message failed is logged, not sent again.
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == sum(first.values())

    send_all()
    assert Counter(sent_subjects()) == Counter(f"m{n:02}" for n in range(12) if n != 2)  # each once
    assert [m.subject for m in Message.objects.all()] == ["m02"]  # put aside, deferred


def test_by_default_a_batch_waits_for_its_deliveries_before_it_commits(settings, relay):
    """Without ``MAILER_LEASE_DELIVERIES``, no delivery goes on across a commit: none at the relay then."""
    settings.MAILER_SENDER_CONNECTIONS = 8
    queue_numbered(120)
    at_commits = []

    assert send_all(on_commit=lambda counts: at_commits.append(relay.busy)).sent == 120

    assert len(at_commits) >= 2 and max(at_commits) == 0
    assert delivered(relay) == Counter(range(120))  # each once


def test_deliveries_go_on_while_a_batch_commits(settings, relay):
    """With 8 connections and leases, a batch commits with deliveries still at the relay: not waited for.

    Counted at the relay, not timed: the sessions in their DATA stage when each batch has committed. Waiting
    for the slowest delivery before every commit left every session idle then (always 0).
    """
    settings.MAILER_SENDER_CONNECTIONS = 8
    settings.MAILER_LEASE_DELIVERIES = True
    queue_numbered(120)
    at_commits = []

    result = send_all(on_commit=lambda counts: at_commits.append(relay.busy))

    assert result.sent == 120
    assert delivered(relay) == Counter(range(120))  # each once
    assert max(at_commits) >= 2
    assert Message.objects.count() == 0
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 120


def test_a_stop_records_the_deliveries_that_went_on_across_a_commit_and_leaves_no_lease(settings, relay):
    """Messages leased across a commit (``mailer.leases``) are recorded when the pass stops: sent ones logged
    and removed, none left queued with its ``not_before`` moved ahead, none sent twice by the next run."""
    settings.MAILER_SENDER_CONNECTIONS = 8
    settings.MAILER_LEASE_DELIVERIES = True
    queue_numbered(200)
    stop = threading.Event()
    at_commits = []

    def committed(counts):
        at_commits.append(relay.busy)
        if counts.sent >= 40 and max(at_commits) >= 1:  # stopped once deliveries have gone on across a commit
            stop.set()

    first = send_all(stop=stop, on_commit=committed).sent

    assert 40 <= first < 200
    assert max(at_commits) >= 1  # some delivery went on across a commit
    assert Message.objects.count() == 200 - first == Message.objects.due().count()  # no lease left
    assert MessageLog.objects.count() == first == len(relay.messages)
    assert send_all().sent == 200 - first
    assert delivered(relay) == Counter(range(200))  # each once


def test_a_leased_message_made_due_by_hand_is_not_sent_twice_by_its_sender(settings, relay):
    """The admin's "retry now" on a message whose delivery goes on across a commit: the sender that leased it
    claims it again, and leaves it alone."""
    settings.MAILER_SENDER_CONNECTIONS = 8
    settings.MAILER_LEASE_DELIVERIES = True
    queue_numbered(120)
    made_due = []

    def retry_now(counts):
        made_due.append(Message.objects.waiting().update(not_before=None))

    assert send_all(on_commit=retry_now).sent == 120

    assert sum(made_due) >= 1
    assert delivered(relay) == Counter(range(120))  # each once
    assert Message.objects.count() == 0
