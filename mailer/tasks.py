"""Send the queue on Django's tasks framework, for projects that run task workers instead of cron.

``django.tasks`` is part of Django from 6.0; before that, the ``django-tasks``
package provides the same API. Neither is a dependency of django-mailer:
this module is only imported by projects that use it.

    from mailer.tasks import send_queued_mail

    send_queued_mail.enqueue()              # one send pass on a worker
    enqueue_send_on_commit()                # the same, once the current transaction commits
    drain_queue.enqueue(alias="default")    # send for a slice, then again when the alias can next send
    start_draining()                        # MAILER_DRAIN_TASKS chains per alias with mail, if not running
    purge_log.enqueue(days=30)              # what ``manage.py purge_mail_log 30`` does

The bookkeeping of the chains of ``drain_queue`` is in :mod:`mailer.drain`; docs/tasks.rst says how it behaves.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from dataclasses import asdict
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.utils import timezone

from mailer import drain
from mailer.conf import mailer_settings
from mailer.drain_hook import chains_wanted
from mailer.engine import send_all
from mailer.heartbeats import Heartbeat
from mailer.models import Message, MessageLog
from mailer.sender_models import SenderKind
from mailer.summaries import SendResult

try:
    from django.tasks import task
except ImportError:
    try:
        from django_tasks import task
    except ImportError:
        raise ImproperlyConfigured(
            "mailer.tasks needs Django's tasks framework: Django 6.0 or later, or the django-tasks package."
        ) from None

logger = logging.getLogger(__name__)


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


@task()
def drain_queue(alias: str = "default", slot: int | None = None, token: str = "") -> dict[str, Any]:
    """Send ``alias``'s mail for ``MAILER_DRAIN_SLICE`` seconds, then enqueue the next run for when it can next send.

    ``alias``: a ``MAILERS`` alias, or ``"default"`` (``MAILER_EMAIL_BACKEND``'s mail, and every alias's
    when ``MAILERS`` is not used); claims take that alias's messages only. ``slot`` and ``token`` are the
    chain's (see :mod:`mailer.drain`); enqueued without them, the run takes a free chain slot to go on in, or
    ends if ``MAILER_DRAIN_TASKS`` chains already run. It does not wait for a rate limit or a pause (but for
    one that ends within :data:`SHORT_PACE` and the slice): its next run is enqueued with ``run_after``. On
    a backend that cannot defer (the immediate one), it sends slice after slice while mail is due, and
    enqueues nothing for later. Returns the counts of its passes and ``next_run``, the ISO time its next
    run was enqueued for (``None``: none was).
    """
    alias = drain.drain_alias(alias)
    can_defer = _backend().supports_defer
    tasks = chains_wanted()
    total = SendResult()
    with Heartbeat(SenderKind.TASK, alias) as heartbeat:
        while True:
            since = timezone.now()
            try:
                result, stopped = _send_slice(alias, slot, token, heartbeat)
            except Exception:
                # A message the error handler re-raised for was deferred; the rest goes after one slice.
                if can_defer:
                    try:
                        _go_on(alias, slot, token, timezone.now() + _seconds(max(drain.drain_slice(), 1.0)), tasks)
                    except Exception as exc:  # the database is down, say: the chain is lost, and restarted later
                        logger.warning("drain_queue(%r) could not enqueue its next run (%s)", alias, exc)
                raise
            if result is not None:
                total = _add(total, result)
            due, paced = drain.next_run(alias, since, stopped, result)
            if can_defer or due is None or due > timezone.now():
                break
    next_run = None
    if due is not None and can_defer:
        next_run = _go_on(alias, slot, token, due, tasks, paced)
    else:
        drain.release(alias, slot, token)
        if due is not None:
            _not_scheduled(alias, due)
    return {**asdict(total), "next_run": None if next_run is None else next_run.isoformat()}


def start_draining(alias: str | None = None, *, tasks: int | None = None, due: datetime.datetime | None = None) -> int:
    """Make sure ``tasks`` (default ``MAILER_DRAIN_TASKS``) chains of :func:`drain_queue` run for ``alias``
    (``None``: every alias with mail queued) in time for mail due at ``due`` (``None``: now); enqueue those
    missing and return how many that was.

    A chain counts as there if it runs, is due within a slice of ``due``, or waits for its relay (rate limit,
    pause), unless it is overdue by more than :data:`mailer.drain.LOST_AFTER` seconds (lost); one that waits
    for a later retry or ``send_at`` is enqueued again for ``due`` (its waiting run will find itself superseded
    and end). One query when they are all there (two with ``alias`` None), so that queueing calls it every
    time. An enqueue that fails is logged, and its slot left free.
    """
    wanted = chains_wanted(tasks)
    if not wanted:
        return 0
    aliases = [drain.drain_alias(alias)] if alias is not None else drain.queued_aliases()
    return _start(aliases, wanted, max(due or timezone.now(), timezone.now()))


def _start(aliases: list[str], wanted: int, mail_at: datetime.datetime | None) -> int:
    """Enqueue the chains :func:`mailer.drain.missing` finds missing for ``mail_at``; how many."""
    started = 0
    for chain_alias, slot in drain.missing(aliases, wanted, mail_at):
        run_at = mail_at or timezone.now()
        token = drain.take(chain_alias, slot, run_at, mail_at)
        if token is not None and _enqueue(chain_alias, slot, token, run_at):
            started += 1
    return started


@task()
def purge_log(days: int, result: str | None = None) -> int:
    """Delete the log entries older than ``days`` days, as ``manage.py purge_mail_log`` does; how many went.

    ``result``: ``"success"`` (also ``None``: the command's default), ``"failure"`` or ``"all"``.
    """
    return sum(MessageLog.objects.purge(days, result).values())


def _backend() -> Any:
    return drain_queue.using(backend=mailer_settings.TASKS_BACKEND).get_backend()


def _send_slice(alias: str, slot: int | None, token: str, heartbeat: Heartbeat) -> tuple[SendResult | None, bool]:
    """Passes over ``alias``'s mail until the slice is over (then after the message in hand); the counts, and
    whether the slice ended. A relay at its limit that opens within :data:`SHORT_PACE` seconds, and before the
    slice ends, is waited for here ("14/s" goes on in the same run); a longer wait is left to the next run."""
    seconds = drain.drain_slice()
    drain.started(alias, slot, token, timezone.now() + _seconds(seconds))
    stop, deadline = threading.Event(), time.monotonic() + seconds

    def progress(result: SendResult) -> None:
        if time.monotonic() >= deadline:
            stop.set()

    queue, total = drain.queue_of(alias), None
    while True:
        # An idle pass (a run woken for mail another chain sent) is logged at the DEBUG level only.
        result = send_all(queue, stop=stop, progress=progress, on_commit=heartbeat.committed, log_idle=False)
        if result is None:  # another run holds the file lock
            return total, stop.is_set()
        heartbeat.passed(result)
        total = result if total is None else _add(total, result)
        wait = result.paced_for
        if stop.is_set() or wait is None or wait > SHORT_PACE or time.monotonic() + wait >= deadline:
            return total, stop.is_set()
        time.sleep(max(wait, 0.01))


# Seconds a run waits, within its slice, for a relay at its rate limit: a per-second limit then does not cost a
# task per second; anything longer frees the worker until the next run's run_after. Two, not one: a per-second
# window can reopen a little more than a second after the pass found it closed (1.0 made the wait for "5/s"
# go to the next run about half the time).
SHORT_PACE = 2.0


def _go_on(
    alias: str, slot: int | None, token: str, due: datetime.datetime, tasks: int, paced: bool = False
) -> datetime.datetime | None:
    """Enqueue the chain's next run for ``due``; when it was enqueued for (None: not, see drain.hand_on).
    Then start the chains of the alias that were lost, so that a fleet heals itself without queueing (only
    those: one waiting for a later retry is left waiting, or chains would wake each other up)."""
    handed = drain.hand_on(alias, slot, token, due, tasks, paced)
    enqueued = handed is not None and _enqueue(alias, *handed, due)
    if tasks:
        _start([alias], tasks, None)
    return due if enqueued else None


def _enqueue(alias: str, slot: int, token: str, due: datetime.datetime | None) -> bool:
    """Enqueue the run ``token`` of the slot, on ``MAILER_TASKS_BACKEND``; a backend that raises frees the slot
    (the mail stays queued: the next queueing tries again) with a warning."""
    options: dict[str, Any] = {"backend": mailer_settings.TASKS_BACKEND}
    if due is not None and due > timezone.now():
        if not _backend().supports_defer:
            drain.release(alias, slot, token)
            _not_scheduled(alias, due)
            return False
        options["run_after"] = due
    try:
        result = drain_queue.using(**options).enqueue(alias=alias, slot=slot, token=token)
    except Exception as exc:
        drain.release(alias, slot, token)
        logger.warning("could not enqueue drain_queue for %r (%s); its mail stays queued", alias, exc)
        return False
    drain.enqueued(alias, slot, token, result.id)
    return True


_told: set[str] = set()  # the backends whose lack of run_after was logged once


def _not_scheduled(alias: str, due: datetime.datetime) -> None:
    backend = mailer_settings.TASKS_BACKEND
    if backend not in _told:
        _told.add(backend)
        logger.info(
            "TASKS[%r] cannot defer a task: drain_queue(%r) did not schedule its next run for %s; mail due later "
            "waits for the next queueing or start_draining()",
            backend,
            alias,
            due.isoformat(),
        )


def _add(total: SendResult, result: SendResult) -> SendResult:
    """The counts of two passes of one run."""
    summed = {
        name: getattr(total, name) + getattr(result, name)
        for name in ("sent", "deferred", "skipped", "failed", "seconds", "held")
    }
    return dataclasses.replace(
        total, **summed, paced_for=result.paced_for, first_error=total.first_error or result.first_error
    )


def _seconds(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)
