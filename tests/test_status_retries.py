"""``queue_status()``, ``problems()`` and ``mailer_status`` with messages waiting for a retry (issue 14).

A message the relay refused for now stays queued with a ``not_before`` ahead: the status counts it as
*waiting*, apart from the mail due now and from deferred mail, shows when the next retry falls due, and the
health verdict does not call the queue stuck because of it, however long ago it was queued. Once its time
has come it is due mail like any other, and is stuck if no sender takes it.
"""

import datetime
import io
import json
import smtplib

import pytest
from django.core.management import call_command
from django.utils import timezone

from mailer import serialization
from mailer.engine import send_all
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    RESULT_SUCCESS,
    MessageLog,
)
from mailer.status import problems, queue_status
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
UNDECODED = "not decoded by the status"


def at(**delta):
    """``NOW`` moved by ``delta`` (negative: in the past)."""
    return NOW + datetime.timedelta(**delta)


def waiting(priority=PRIORITY_MEDIUM, *, added, retry_at, attempts=1):
    """A message a relay refused ``attempts`` times, not to be tried again before ``retry_at``."""
    return queue(
        priority=priority, added=added, data=UNDECODED, not_before=retry_at, attempts=attempts, last_error="451 later"
    )


# --- queue_status() ----------------------------------------------------------------------------------


def test_waiting_messages_are_counted_apart_from_due_and_deferred_ones():
    queue(priority=PRIORITY_HIGH, added=at(minutes=-1), data=UNDECODED)
    queue(priority=PRIORITY_MEDIUM, added=at(minutes=-2), data=UNDECODED)
    waiting(PRIORITY_HIGH, added=at(hours=-3), retry_at=at(minutes=20))
    waiting(PRIORITY_MEDIUM, added=at(hours=-1), retry_at=at(minutes=7))
    waiting(PRIORITY_LOW, added=at(minutes=-5), retry_at=at(hours=2), attempts=6)
    waiting(99, added=at(minutes=-5), retry_at=at(minutes=30))  # a priority set by hand waits too
    # A retry whose time has passed is due, at its priority.
    waiting(PRIORITY_LOW, added=at(minutes=-10), retry_at=at(seconds=-1))
    # Deferred is deferred, whatever its not_before says.
    waiting(PRIORITY_DEFERRED, added=at(days=-1), retry_at=at(minutes=1))

    status = queue_status(now=NOW)
    assert (status.high, status.medium, status.low, status.other) == (1, 1, 1, 0)
    assert (status.waiting, status.deferred) == (4, 1)
    assert (status.queued, status.total) == (3, 8)
    assert status.next_retry == at(minutes=7)
    assert status.next_retry_in == 420.0


def test_nothing_waits():
    queue(added=at(minutes=-1), data=UNDECODED)
    status = queue_status(now=NOW)
    assert (status.waiting, status.next_retry, status.next_retry_in) == (0, None, None)


def test_the_oldest_due_message_leaves_out_those_waiting():
    waiting(added=at(days=-2), retry_at=at(minutes=10))  # old, but its time has not come
    queue(priority=PRIORITY_LOW, added=at(minutes=-3), data=UNDECODED)
    status = queue_status(now=NOW)
    assert status.oldest_queued == at(minutes=-3)
    assert status.oldest_queued_age == 180.0


def test_a_retry_counts_as_due_from_the_time_it_fell_due():
    waiting(added=at(hours=-3), retry_at=at(minutes=-2))  # queued three hours ago, due since two minutes
    queue(priority=PRIORITY_LOW, added=at(minutes=-1), data=UNDECODED)
    status = queue_status(now=NOW)
    assert status.oldest_queued == at(minutes=-2)
    assert status.oldest_queued_age == 120.0


def test_only_waiting_mail_has_no_oldest_due():
    waiting(added=at(days=-1), retry_at=at(seconds=30))
    status = queue_status(now=NOW)
    assert status.oldest_queued is None and status.oldest_queued_age is None
    assert (status.waiting, status.total) == (1, 1)


def test_still_three_queries_and_nothing_decoded(monkeypatch, django_assert_num_queries):
    waiting(added=at(hours=-1), retry_at=at(minutes=5))
    queue(priority=PRIORITY_HIGH, added=at(minutes=-5), data="garbage")
    MessageLog.objects.create(
        message_data="",
        when_added=at(minutes=-2),
        priority=PRIORITY_MEDIUM,
        when_attempted=at(minutes=-1),
        result=RESULT_SUCCESS,
        log_message="",
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the status decoded message data")

    monkeypatch.setattr(serialization, "loads", refuse)
    # The pauses; the queue in one GROUP BY, waiting messages included; the log in two (a success within the day).
    with django_assert_num_queries(4):
        status = queue_status(now=NOW)
    assert (status.high, status.waiting) == (1, 1)


def test_as_dict():
    waiting(added=at(hours=-1), retry_at=at(seconds=90))
    waiting(added=at(hours=-1), retry_at=at(minutes=50))
    data = queue_status(now=NOW).as_dict()
    assert data["queue"] == {
        "high": 0,
        "medium": 0,
        "low": 0,
        "waiting": 2,
        "scheduled": 0,
        "deferred": 0,
        "other": 0,
        "total": 2,
    }
    assert data["next_retry"] == at(seconds=90).isoformat()
    assert data["next_retry_in_seconds"] == 90.0
    assert data["oldest_queued"] is None
    assert json.loads(json.dumps(data)) == data


def test_what_the_engine_leaves_waiting_is_counted_waiting_and_the_due_count_is_what_a_sender_sends(failures):
    queue("greylisted")
    queue("fine")
    failures["greylisted"] = smtplib.SMTPDataError(451, b"4.7.1 Greylisted, try again later")
    assert send_all().sent == 1
    del failures["greylisted"]
    queue("fine too")

    status = queue_status()
    assert (status.medium, status.waiting, status.queued) == (1, 1, 1)
    assert status.next_retry > status.checked_at
    assert send_all().sent == status.queued  # the waiting message is not sent before its time


# --- problems(): the health verdict ------------------------------------------------------------------


def test_old_messages_waiting_for_a_retry_are_not_a_problem():
    waiting(added=at(days=-2), retry_at=at(hours=5), attempts=14)
    waiting(added=at(hours=-7), retry_at=at(seconds=10))
    queue(added=at(seconds=-30), data=UNDECODED)
    assert problems(queue_status(now=NOW), max_age=600, max_deferred=0) == []


def test_an_old_message_due_now_is_still_a_problem():
    waiting(added=at(days=-2), retry_at=at(hours=5))
    queue(added=at(hours=-2), data=UNDECODED)  # due, and nothing sent it
    [found] = problems(queue_status(now=NOW), max_age=600)
    assert found.startswith("the oldest queued message has waited 7200.0s (2h 0m)")


def test_a_retry_due_long_ago_and_not_sent_is_a_problem():
    waiting(added=at(hours=-3), retry_at=at(minutes=-20))
    [found] = problems(queue_status(now=NOW), max_age=600)
    assert "has waited 1200.0s (20m 0s), longer than --max-age 600" in found


def test_a_retry_that_just_fell_due_is_not_a_problem_yet():
    # Queued hours ago, but due only since a moment: a sender has not had the time to take it.
    waiting(added=at(hours=-3), retry_at=at(seconds=-5))
    assert problems(queue_status(now=NOW), max_age=600) == []


def test_waiting_messages_are_not_deferred_ones():
    for _ in range(3):
        waiting(added=at(hours=-1), retry_at=at(minutes=5))
    queue(priority=PRIORITY_DEFERRED, added=NOW, data=UNDECODED)
    assert problems(queue_status(now=NOW), max_deferred=1) == []


# --- mailer_status -----------------------------------------------------------------------------------


def run(*args):
    """Run mailer_status; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("mailer_status", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def from_now(**delta):
    return timezone.now() + datetime.timedelta(**delta)


def test_table_shows_the_waiting_messages_and_the_next_retry():
    waiting(added=from_now(hours=-4), retry_at=from_now(minutes=9, seconds=30))
    waiting(added=from_now(hours=-4), retry_at=from_now(hours=3))
    queue(priority=PRIORITY_HIGH, added=from_now(seconds=-30), data=UNDECODED)
    code, out, err = run("--max-age", "600")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split() == ["high", "1"]
    assert lines[2].split() == ["medium", "0"]
    assert lines[4].split() == ["waiting", "2"]
    assert lines[7].split() == ["total", "3"]
    assert lines[9].startswith("  next retry  ")
    assert lines[9].endswith("(in 9m 29s)") or lines[9].endswith("(in 9m 30s)")


def test_json_shows_the_waiting_messages_and_the_next_retry():
    waiting(added=from_now(days=-1), retry_at=from_now(minutes=30))
    code, out, err = run("--json", "--max-age", "60")
    assert (code, err) == (0, "")  # a day old, but waiting: healthy
    data = json.loads(out)
    assert data["queue"]["waiting"] == data["queue"]["total"] == 1
    assert 1790 <= data["next_retry_in_seconds"] <= 1800
    assert data["oldest_queued"] is None


def test_max_age_fails_for_a_due_message_beside_waiting_ones():
    waiting(added=from_now(days=-1), retry_at=from_now(minutes=30))
    queue(priority=PRIORITY_LOW, added=from_now(hours=-1), data=UNDECODED)
    code, out, err = run("--json", "--max-age", "600")
    assert code == 1
    assert json.loads(out)["queue"]["waiting"] == 1
    assert err.count("\n") == 1 and "longer than --max-age 600" in err
