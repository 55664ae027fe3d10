"""Send the queue on Django's tasks framework, for projects that run task workers instead of cron.

``django.tasks`` is part of Django from 6.0; before that, the ``django-tasks``
package provides the same API. Neither is a dependency of django-mailer:
this module is only imported by projects that use it.

    from mailer.tasks import send_queued_mail

    send_queued_mail.enqueue()              # one send pass on a worker
    enqueue_send_on_commit()                # the same, once the current transaction commits
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction

from mailer.engine import send_all
from mailer.heartbeats import Heartbeat
from mailer.models import Message
from mailer.sender_models import SenderKind

try:
    from django.tasks import task
except ImportError:
    try:
        from django_tasks import task
    except ImportError:
        raise ImproperlyConfigured(
            "mailer.tasks needs Django's tasks framework: Django 6.0 or later, or the django-tasks package."
        ) from None


@task()
def send_queued_mail() -> dict[str, Any] | None:
    """One pass over the queue, as ``manage.py send_mail`` makes; what it did, or None if another run held the lock.

    Runs like any sending run: with the file lock (set ``MAILER_USE_FILE_LOCK =
    False`` when workers run on several machines and the database is
    PostgreSQL or MySQL/MariaDB), and raising what ``send_mail`` raises. When
    every relay with mail is at its ``MAILER_RATE_LIMITS`` or paused, it waits
    for the first to open, as ``runmailer`` does.
    """
    with Heartbeat(SenderKind.TASK) as heartbeat:  # the worker's row in mailer_status while the pass runs
        result = send_all(wait_for_limits=True, on_commit=heartbeat.committed)
    return None if result is None else asdict(result)


def enqueue_send_on_commit(using: str | None = None) -> None:
    """Enqueue :func:`send_queued_mail` when the current transaction on the queue's database commits.

    Call it after queueing mail in a view, so that a worker sends it within
    moments, and never before the messages are visible to the worker.
    """
    transaction.on_commit(send_queued_mail.enqueue, using=using or router.db_for_write(Message))
