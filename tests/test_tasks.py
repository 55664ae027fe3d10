"""Sending on Django's tasks framework (``django.tasks`` from Django 6.0, the ``django-tasks`` package before).

With the immediate backend, an enqueued task runs at once, in this process, as a worker would run it.
"""

import datetime

import pytest
from django.core import mail
from django.utils import timezone

from mailer.models import Message
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db


def test_a_task_sends_the_queue_and_reports_what_it_did(tasks):
    queue("one")
    queue("two")
    result = tasks.send_queued_mail.enqueue()
    assert result.status.name == "SUCCESSFUL"
    assert result.return_value == {
        "sent": 2,
        "deferred": 0,
        "skipped": 0,
        "failed": 0,
        "seconds": pytest.approx(result.return_value["seconds"]),
        "held": 0,  # issue 12 item 3: rows this worker could not decode, left queued
        "paced_for": None,  # issue 15: set when every relay was at its rate limit or paused
        "first_error": None,  # issue 17: the reason of the first message deferred or failed
    }
    assert sorted(email.subject for email in mail.outbox) == ["one", "two"]
    assert Message.objects.count() == 0


def test_enqueued_when_the_transaction_commits(tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        queue("from a view")
        tasks.enqueue_send_on_commit()
        assert mail.outbox == []  # nothing before the commit: a worker could not see the message yet
    assert len(callbacks) == 1
    assert [email.subject for email in mail.outbox] == ["from a view"]


def test_a_task_leaves_a_message_waiting_for_its_retry_until_it_is_due(tasks):
    """The task is one pass of the engine: a message whose next attempt is ahead waits, as with every sender."""
    ahead = timezone.now() + datetime.timedelta(minutes=5)
    queue("waiting", not_before=ahead, attempts=1, last_error="451 4.3.0 Try again later")
    queue("due")
    result = tasks.send_queued_mail.enqueue()
    assert result.return_value["sent"] == 1
    assert [email.subject for email in mail.outbox] == ["due"]
    Message.objects.update(not_before=timezone.now() - datetime.timedelta(seconds=1))
    assert tasks.send_queued_mail.enqueue().return_value["sent"] == 1
    assert [email.subject for email in mail.outbox] == ["due", "waiting"]
