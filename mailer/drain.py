"""The bookkeeping of continuous draining: which ``drain_queue`` chains run, which are lost, when each runs next.

A *chain* is a ``drain_queue`` task (:mod:`mailer.tasks`) that sends one alias's mail for a slice of
time and then enqueues its own next run, for when that alias can next send. ``MAILER_DRAIN_TASKS``
chains per alias share the alias's mail (their claims skip each other's rows). Each chain has a
:class:`~mailer.sender_models.DrainChain` row (its *slot*): the token of the run it waits for and when
that run is due. A run whose token is no longer its slot's was superseded: it sends its slice, then
ends. A slot whose run is overdue by more than :data:`LOST_AFTER` is lost (its worker was killed, or
its task was dropped) and is taken again by the next :func:`mailer.tasks.start_draining`.

Nothing here imports the tasks framework, nor is imported by queueing: that calls
:func:`mailer.drain_hook.queued`.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from mailer import claims, routing
from mailer.conf import mailer_settings
from mailer.models import Message
from mailer.sender_models import DrainChain

logger = logging.getLogger("mailer.tasks")

# A chain whose next run is this many seconds overdue (or, while it runs, whose slice ended that long ago)
# is taken for lost and may be started again. Long enough for a worker busy with other tasks to get to it
# and for the message in hand when a slice ends; a chain taken for lost that was only late sends one more
# slice and ends (its token was replaced), so being wrong costs one slice of a second chain.
LOST_AFTER = 300

PACED_AT_LEAST = 1.0  # seconds: the earliest next run of a chain that waits for its relay


def drain_alias(mailer: str | None) -> str:
    """The alias of the chains that send mail queued with ``Message.mailer`` = ``mailer``: that ``MAILERS``
    alias, or ``"default"`` (no alias, no ``MAILERS``, or an alias since removed, which the default routes)."""
    if mailer is None or not routing.mailers_configured() or mailer not in settings.MAILERS:
        return routing.DEFAULT_ALIAS
    return mailer


def queue_of(alias: str) -> QuerySet:
    """The queued messages the chains of ``alias`` send, and no others."""
    alias = drain_alias(alias)
    if alias != routing.DEFAULT_ALIAS:
        return Message.objects.filter(claims.mailers_filter(("only", frozenset([alias]))))
    others = frozenset(a for a in routing.aliases() if a is not None and a != routing.DEFAULT_ALIAS)
    return Message.objects.filter(claims.mailers_filter(("except", others))) if others else Message.objects.all()


def queued_aliases() -> list[str]:
    """The aliases that have mail queued (deferred mail aside: no chain sends it)."""
    mailers = Message.objects.non_deferred().order_by().values_list("mailer", flat=True).distinct()
    return sorted({drain_alias(mailer) for mailer in mailers})


def drain_slice() -> float:
    """``MAILER_DRAIN_SLICE``: seconds one run sends for before it hands over to its next run."""
    try:
        return max(0.0, float(mailer_settings.DRAIN_SLICE))
    except (TypeError, ValueError):
        return 10.0


def _one_slice() -> datetime.timedelta:
    """A slice, and at least a second: how far ahead a chain counts as serving mail, or looks again."""
    return datetime.timedelta(seconds=max(drain_slice(), 1.0))


def _rows() -> QuerySet:
    return DrainChain.objects.using(router.db_for_write(DrainChain))


def _lost(now: datetime.datetime) -> Q:
    """The slots free to take: ended (no run due), or overdue by more than LOST_AFTER (the worker is gone)."""
    return Q(due_at__isnull=True) | Q(due_at__lt=now - datetime.timedelta(seconds=LOST_AFTER))


def _serving(now: datetime.datetime, mail_at: datetime.datetime) -> Q:
    """The slots whose chain will send mail due at ``mail_at`` within a slice of it: running, due by then, or
    waiting for its relay (which that mail waits for as well). Not one waiting for a later retry or ``send_at``,
    nor a lost one."""
    by = mail_at + _one_slice()
    return ~_lost(now) & (Q(paced=True) | Q(due_at__lte=by))


def missing(aliases: Iterable[str], tasks: int, mail_at: datetime.datetime | None) -> list[tuple[str, int]]:
    """The ``(alias, slot)`` of each of ``tasks`` chains per alias to start: one query.

    For mail due at ``mail_at``, every slot not serving it: free, lost, or waiting for a later retry or
    ``send_at`` (its waiting run, superseded, will end). With ``mail_at`` None, the free and lost slots only.
    """
    aliases = sorted(set(aliases))
    if not aliases or tasks <= 0:
        return []
    # The rows judged here as _serving() and _lost() do in SQL: a plain query is built in a fraction of the time.
    rows = _rows().filter(alias__in=aliases).values_list("alias", "slot", "due_at", "paced")
    now = timezone.now()
    lost = now - datetime.timedelta(seconds=LOST_AFTER)
    by = None if mail_at is None else mail_at + _one_slice()
    taken = {
        (alias, slot)
        for alias, slot, due_at, paced in rows
        if due_at is not None and due_at >= lost and (by is None or paced or due_at <= by)
    }
    return [(alias, slot) for alias in aliases for slot in range(tasks) if (alias, slot) not in taken]


def take(
    alias: str, slot: int, due: datetime.datetime, mail_at: datetime.datetime | None, paced: bool = False
) -> str | None:
    """Take the slot (as :func:`missing` gives it for ``mail_at``) for a run due at ``due``; its new token, or
    None when another process took it first."""
    token, now = uuid.uuid4().hex, timezone.now()
    fields = {"token": token, "due_at": due, "task_id": "", "paced": paced}
    rows = _rows().filter(alias=alias, slot=slot)
    if (rows.filter(_lost(now)) if mail_at is None else rows.exclude(_serving(now, mail_at))).update(**fields):
        return token
    try:
        with transaction.atomic(using=router.db_for_write(DrainChain)):
            _rows().create(alias=alias, slot=slot, **fields)
    except IntegrityError:
        return None  # the row exists and is live: another process took it
    return token


def hand_on(
    alias: str, slot: int | None, token: str, due: datetime.datetime, tasks: int, paced: bool = False
) -> tuple[int, str] | None:
    """A run ends and its alias has mail left for ``due`` (``paced``: when its relay opens): the slot and new
    token of its next run, or None.

    A run keeps its own slot while its token is the slot's; a run superseded, or enqueued by hand
    (``slot`` None), takes a free or lost slot among ``tasks`` (at least one), and ends when there is none:
    the chains that hold them send the mail.
    """
    if slot is not None:
        new = uuid.uuid4().hex
        fields = {"token": new, "due_at": due, "task_id": "", "paced": paced}
        if _rows().filter(alias=alias, slot=slot, token=token).update(**fields):
            return slot, new
    for _alias, free in missing([alias], max(tasks, 1), None):
        new = take(alias, free, due, None, paced)
        if new is not None:
            return free, new
    return None


def started(alias: str, slot: int | None, token: str, until: datetime.datetime) -> None:
    """A run of the slot starts; it sends until about ``until`` (its row is not lost before that, plus LOST_AFTER)."""
    if slot is not None:
        fields = {"due_at": until, "started_at": timezone.now(), "paced": False}
        _rows().filter(alias=alias, slot=slot, token=token).update(**fields)


def enqueued(alias: str, slot: int, token: str, task_id: str) -> None:
    """The run with ``token`` was enqueued as the task ``task_id`` (kept for whoever looks for it)."""
    _rows().filter(alias=alias, slot=slot, token=token).update(task_id=str(task_id)[:255])


def release(alias: str, slot: int | None, token: str) -> None:
    """The slot's chain ends (nothing left, or its next run could not be enqueued): the slot is free again."""
    if slot is not None:
        _rows().filter(alias=alias, slot=slot, token=token).update(due_at=None)


def next_run(alias: str, since: datetime.datetime, stopped: bool, result: Any) -> tuple[datetime.datetime | None, bool]:
    """When the chain of ``alias`` can next send, after a pass that started at ``since`` (``None``: nothing left),
    and whether that is when its relay opens.

    ``stopped``: the pass ended because its slice did; ``result``: its :class:`~mailer.summaries.SendResult`
    (``None`` when another run held the file lock). Mail due and left by a pass that was stopped or dealt with
    something: now. Every relay of the alias closed (rate limit, pause): when the first opens. Else the first
    message waiting for its retry or ``send_at`` (one that fell due during the pass: now). Mail due that
    a pass found and could not take (held back, undecodable here) does not count: the chain would spin on it.
    """
    now = timezone.now()
    queue = queue_of(alias).non_deferred()
    if result is None:  # the file lock: another sender on this machine is at it; look again after a slice
        return (now + _one_slice() if queue.exists() else None), False
    if result.paced_for is not None:
        # At least a second on: a relay said to open "now" that the pass still found closed is not spun on.
        wait = max(result.paced_for, PACED_AT_LEAST)
        return (now + datetime.timedelta(seconds=wait) if queue.exists() else None), True
    dealt = result.sent + result.deferred + result.skipped + result.failed
    if (stopped or dealt) and queue.due().exists():
        return now, False
    due = queue.next_due(since)
    return (None if due is None else max(due, now)), False
