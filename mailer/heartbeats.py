"""A sending process's heartbeat: its :class:`~mailer.sender_models.SenderHeartbeat` row, kept up to date.

:class:`Heartbeat` writes from a thread of its own, with a database connection of its own that it closes
after each write: the row when the sender starts, one ``UPDATE`` every ``MAILER_HEARTBEAT_INTERVAL``
seconds (never one per message), ``stopped_at`` when it ends cleanly. The sending thread only hands it
counts, under a lock, once per committed batch (``committed``) and once per pass (``passed``). So a
sender waiting on an empty queue, on a rate limit or on a slow relay keeps beating, and a heartbeat
that is slow or fails never holds up sending: failures are logged and the next beat tries again.

A database without the table (code deployed before ``migrate``) means no heartbeats for this process:
one warning, and sending goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from django.db import connections, router
from django.utils import timezone

from mailer import senders, tables
from mailer.conf import mailer_settings
from mailer.sender_models import SenderHeartbeat

if TYPE_CHECKING:
    from mailer.summaries import SendResult

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # seconds a stopping sender waits for its last heartbeat ("stopped") to be written


class Heartbeat:
    """The heartbeat of one sender of ``kind`` (see :class:`~mailer.sender_models.SenderKind`), for ``alias``
    ("" for all). Use it as a context manager around the sending; with ``MAILER_HEARTBEAT_INTERVAL`` None or 0
    it does nothing."""

    def __init__(self, kind: str, alias: str = "") -> None:
        self.kind = kind
        self.alias = alias
        self.interval = _interval()
        self.using = router.db_for_write(SenderHeartbeat)
        self.lock = threading.Lock()
        self.done = 0  # sent by the passes that ended
        self.in_pass = 0  # sent and committed by the pass under way
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.key: dict | None = None  # the row's unique key, once written
        self.failing = False
        self.last_sent = 0
        self.last_at = 0.0

    # Called by the sending thread: cheap, no database.

    def committed(self, result: SendResult) -> None:
        """A batch of the pass under way committed; ``result`` holds the pass's counts so far."""
        with self.lock:
            self.in_pass = result.sent

    def passed(self, result: SendResult) -> None:
        """A pass ended with ``result``."""
        with self.lock:
            self.done += result.sent
            self.in_pass = 0

    def sent(self) -> int:
        with self.lock:
            return self.done + self.in_pass

    def __enter__(self) -> Heartbeat:
        if self.interval > 0:
            self.thread = threading.Thread(target=self.beat, name="mailer-heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.thread is None:
            return
        self.stopping.set()
        self.thread.join(STOP_TIMEOUT)

    # The heartbeat's thread.

    def beat(self) -> None:
        try:
            if not self.write(self.start):
                return
            while not self.stopping.wait(self.interval):
                if not self.write(self.update):
                    return
            self.write(self.stop)
        finally:
            connections.close_all()  # this thread's connections only

    def write(self, how) -> bool:
        """Do one write (``how``); False once the table is found missing (no more heartbeats then)."""
        try:
            how()
        except Exception as exc:
            missing = tables.explain(exc)
            if missing is not None:
                logger.warning("no sender heartbeats: %s", missing)
                return False
            if not self.failing:
                logger.warning("could not write the sender heartbeat (%s); sending goes on", _one_line(exc))
            self.failing = True
        else:
            if self.failing:
                logger.info("the sender heartbeat is written again")
            self.failing = False
        finally:
            _close(self.using)
        return True

    def start(self) -> None:
        """Make the row (or take over one this host's process id left): single statements, no transaction,
        so that on SQLite they wait for the write lock like the sender's own claims do."""
        now = timezone.now()
        senders.prune(now, self.using)
        self.last_sent, self.last_at = self.sent(), time.monotonic()
        key = {"host": senders.host_name()[:255], "pid": os.getpid(), "kind": self.kind, "alias": self.alias}
        fields = {"started": now, "last_seen": now, "stopped_at": None, "sent": self.last_sent, "rate": 0.0}
        rows = SenderHeartbeat.objects.using(self.using).filter(**key)
        if not rows.update(**fields, interval=self.interval):
            SenderHeartbeat.objects.using(self.using).create(**key, **fields, interval=self.interval)
        self.key = key

    def update(self, **more: object) -> None:
        """One heartbeat: the counts and the rate since the last one (and ``more``)."""
        if self.key is None:  # the first write failed
            self.start()
        sent, at = self.sent(), time.monotonic()
        rate = (sent - self.last_sent) / (at - self.last_at) if at > self.last_at else 0.0
        self.last_sent, self.last_at = sent, at
        rows = SenderHeartbeat.objects.using(self.using).filter(**self.key)
        if not rows.update(**{"last_seen": timezone.now(), "sent": sent, "rate": rate, **more}):
            self.start()  # deleted meanwhile (pruned as gone after a long outage): made again
            if more:
                rows.update(**more)

    def stop(self) -> None:
        self.update(stopped_at=timezone.now(), rate=0.0)


def _interval() -> float:
    """``MAILER_HEARTBEAT_INTERVAL`` in seconds; 0 (no heartbeats, with a warning) when it is not a number."""
    value = mailer_settings.HEARTBEAT_INTERVAL
    try:
        return max(0.0, float(value or 0))
    except (TypeError, ValueError):
        logger.warning("MAILER_HEARTBEAT_INTERVAL is %r, not a number of seconds: no sender heartbeats", value)
        return 0.0


def _close(using: str) -> None:
    try:
        connections[using].close()
    except Exception:
        logger.debug("closing the heartbeat's database connection raised", exc_info=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
