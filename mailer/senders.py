"""Which senders are running, on every host: the heartbeat rows read, and the one rule that says what they mean.

Each sending process keeps a :class:`~mailer.sender_models.SenderHeartbeat` row up to date
(:mod:`mailer.heartbeats`). A row is, at a given moment:

* ``stopped`` when its process said it ended (``stopped_at`` is set);
* ``live`` when its last heartbeat is at most :func:`gone_after` seconds old;
* ``gone`` otherwise: the process stopped without a word (killed, its machine lost) or cannot reach the database.

``mailer_status`` (its table and ``--json``) and the admin all use :func:`state`. Rows stopped or gone for
longer than :data:`FORGET_AFTER` are deleted by the next sender that starts (:func:`prune`).
"""

from __future__ import annotations

import datetime
import socket
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from mailer import tables
from mailer.conf import mailer_settings
from mailer.sender_models import SenderHeartbeat

LIVE, GONE, STOPPED = "live", "gone", "stopped"

# A sender is gone after at least this many seconds without a heartbeat, whatever its interval: a database
# briefly slow or a heartbeat that failed once must not make a running sender look dead.
GONE_FLOOR = 30.0
GONE_INTERVALS = 3  # ... and after this many of its heartbeat intervals.
# Rows of senders stopped or gone for this long are deleted.
FORGET_AFTER = datetime.timedelta(days=1)


def host_name() -> str:
    """The host name a sender reports: ``MAILER_SENDER_HOST``, else the machine's."""
    return str(mailer_settings.SENDER_HOST or socket.gethostname())


def gone_after(interval: float) -> float:
    """Seconds without a heartbeat after which a sender beating every ``interval`` seconds is gone.

    ``MAILER_SENDER_GONE_AFTER`` when set; else :data:`GONE_INTERVALS` intervals, at least :data:`GONE_FLOOR`.
    """
    if mailer_settings.SENDER_GONE_AFTER is not None:
        return float(mailer_settings.SENDER_GONE_AFTER)
    return max(GONE_INTERVALS * float(interval or 0), GONE_FLOOR)


def state(row: SenderHeartbeat, now: datetime.datetime) -> str:
    """:data:`LIVE`, :data:`GONE` or :data:`STOPPED`: what ``row`` says of its sender at ``now``."""
    if row.stopped_at is not None:
        return STOPPED
    if (now - row.last_seen).total_seconds() > gone_after(row.interval):
        return GONE
    return LIVE


@dataclass(frozen=True)
class SenderStatus:
    """One sender as ``mailer_status`` shows it."""

    host: str
    pid: int
    kind: str
    alias: str
    state: str
    started: datetime.datetime
    last_seen: datetime.datetime
    stopped_at: datetime.datetime | None
    sent: int
    rate: float
    last_seen_age: float  # seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "kind": self.kind,
            "alias": self.alias,
            "state": self.state,
            "started": self.started.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "last_seen_age_seconds": round(self.last_seen_age, 3),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at is not None else None,
            "sent": self.sent,
            "rate": round(self.rate, 3),
        }


ORDER = {LIVE: 0, GONE: 1, STOPPED: 2}


def sender_statuses(now: datetime.datetime | None = None) -> list[SenderStatus] | None:
    """Every sender not forgotten yet: live ones first, then gone, then stopped; by host and pid within each.

    None when the heartbeat table does not exist (``migrate`` not run since migration 0018).
    """
    now = now or timezone.now()
    try:
        rows = list(SenderHeartbeat.objects.filter(last_seen__gte=now - FORGET_AFTER))
    except DatabaseError as exc:
        if tables.explain(exc) is None:
            raise
        return None
    found = [
        SenderStatus(
            host=row.host,
            pid=row.pid,
            kind=row.kind,
            alias=row.alias,
            state=state(row, now),
            started=row.started,
            last_seen=row.last_seen,
            stopped_at=row.stopped_at,
            sent=row.sent,
            rate=row.rate,
            last_seen_age=max(0.0, (now - row.last_seen).total_seconds()),
        )
        for row in rows
    ]
    return sorted(found, key=lambda sender: (ORDER[sender.state], sender.host, sender.pid, sender.kind))


def senders_json(statuses: list[SenderStatus] | None) -> list[dict[str, Any]] | None:
    """What ``mailer_status --json`` shows under ``"senders"``: every sender, or null without the table."""
    return None if statuses is None else [sender.as_dict() for sender in statuses]


def senders_table(statuses: list[SenderStatus] | None) -> list[str]:
    """``mailer_status``'s lines for the senders: the live and the gone ones (stopped ones only counted)."""
    if statuses is None:
        return ["", f"Senders: unknown (no heartbeat table: {tables.MIGRATE})"]
    shown = [sender for sender in statuses if sender.state != STOPPED]
    stopped = len(statuses) - len(shown)
    lines = ["", f"Senders     {len(shown) - sum(s.state == GONE for s in shown)} live"]
    for sender in shown:
        alias = f" [{sender.alias}]" if sender.alias else ""
        lines.append(
            f"  {sender.state:<5} {sender.host}:{sender.pid} {sender.kind}{alias}  sent {sender.sent}, "
            f"{sender.rate:.1f}/s, seen {sender.last_seen_age:.0f}s ago"
        )
    if stopped:
        lines.append(f"  stopped in the last day {stopped:>6}")
    return lines


def prune(now: datetime.datetime, using: str) -> int:
    """Delete the rows of senders stopped, or last seen, more than :data:`FORGET_AFTER` ago; how many."""
    deleted, _ = SenderHeartbeat.objects.using(using).filter(last_seen__lt=now - FORGET_AFTER).delete()
    return deleted
