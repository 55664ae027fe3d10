"""Sending on Django's tasks framework (``django.tasks`` from Django 6.0, the ``django-tasks`` package before).

With the immediate backend, an enqueued task runs at once, in this process, as a worker would run it.
"""

import importlib

import django
import pytest
from django.core import mail

from mailer.models import Message
from tests.support.queueing import queue
from tests.support.services import unavailable

pytestmark = pytest.mark.django_db

IMMEDIATE = (
    "django.tasks.backends.immediate.ImmediateBackend"
    if django.VERSION >= (6, 0)
    else "django_tasks.backends.immediate.ImmediateBackend"
)


@pytest.fixture
def tasks(settings):
    module = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    try:
        importlib.import_module(module)
    except ImportError as exc:  # django-tasks is in the test extra: missing, it fails under CI's settings
        unavailable(f"{module} cannot be imported ({exc}); pip install -e '.[test]'")
    settings.TASKS = {"default": {"BACKEND": IMMEDIATE}}
    from mailer import tasks

    return tasks


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
