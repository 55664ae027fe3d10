"""``mailer_status`` counts every row a sender sends, including priorities set by hand (issue 12, item 11).

The senders' claim leaves out only ``PRIORITY_DEFERRED``: a row whose priority someone set to 0, 5 or 99
in the database is sent like any other, so the status must count it, take it into the oldest waiting
message and into the health check.
"""

import io
import json

import pytest
from django.core import mail
from django.core.management import call_command

from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, PRIORITY_MEDIUM, Message
from mailer.status import queue_status
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

HAND_SET = [0, 5, 99]


def hand_set(priority, minutes_ago):
    """A message whose priority is then set by an UPDATE by hand (the model's choices do not hold it)."""
    message = queue(f"priority {priority}", minutes_ago=minutes_ago)
    Message.objects.filter(pk=message.pk).update(priority=priority)
    return message.when_added


@pytest.fixture
def hand_set_queue():
    oldest = hand_set(99, minutes_ago=120)
    hand_set(0, minutes_ago=30)
    hand_set(5, minutes_ago=20)
    hand_set(PRIORITY_MEDIUM, minutes_ago=1)
    hand_set(PRIORITY_DEFERRED, minutes_ago=500)
    return oldest


def test_queue_status_counts_hand_set_priorities(hand_set_queue):
    status = queue_status()
    assert (status.high, status.medium, status.low, status.deferred, status.other) == (0, 1, 0, 1, 3)
    assert (status.queued, status.total) == (4, 5)
    assert status.oldest_queued == hand_set_queue  # the priority 99 row waits longest
    assert status.as_dict()["queue"] == {
        "high": 0,
        "medium": 1,
        "low": 0,
        "waiting": 0,
        "scheduled": 0,
        "deferred": 1,
        "other": 3,
        "total": 5,
    }


def test_the_counted_rows_are_those_a_sender_sends(hand_set_queue):
    counted = queue_status().queued
    assert send_all().sent == counted == 4
    assert sorted(m.subject for m in mail.outbox) == ["priority 0", "priority 2", "priority 5", "priority 99"]


def test_table_json_and_health_check(hand_set_queue):
    out = io.StringIO()
    call_command("mailer_status", stdout=out)
    table = out.getvalue()
    assert "  other             3" in table
    assert "  total             5" in table

    out = io.StringIO()
    call_command("mailer_status", "--json", stdout=out)
    assert json.loads(out.getvalue())["queue"]["other"] == 3

    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("mailer_status", "--max-age", "3600", stdout=io.StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert "longer than --max-age 3600" in err.getvalue()
