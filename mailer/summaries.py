"""What a sending pass did (:class:`SendResult`), and the one ``Sent: ...`` line that says it.

Every pass ends with exactly one such line at the ``INFO`` level, whichever way it ends
(docs/sending.rst, "Logging", lists them):

* it ran: ``Sent: sent 120, deferred 2, skipped 1, failed 0 in 4.37s`` (:func:`log_sent`; the engine
  logs it on ``mailer.engine``, with ``sent``, ``deferred`` and ``duration`` on the record);
* an exception stopped it: the counts committed before, then ``, then stopped by ValueError: ...``
  (:func:`log_sent` with ``stopped_by``);
* another run holds the file lock: ``Sent: nothing in 0.00s, another run holds the lock
  /path/send_mail.lock`` (:func:`log_lock_held`).

The functions log with the same format strings and arguments whoever calls them, so a handler that
groups records by their format string sees one kind of line per case.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mailer.locking import lock_path
from mailer.logrows import failure_text
from mailer.logtext import loggable
from mailer.outcomes import Outcome


@dataclass
class SendResult:
    """What one :func:`~mailer.engine.send_all` pass did."""

    sent: int = 0
    deferred: int = 0
    skipped: int = 0  # no recipient left after the don't-send list
    failed: int = 0  # undecodable data, or an exception the error handler re-raised
    seconds: float = 0.0
    held: int = 0  # intact rows this process cannot decode (another SECRET_KEY, a class it lacks): left queued
    # Set when the pass ended because every relay with mail was at its rate limit or paused: the seconds
    # until the first of them may be sent to again.
    paced_for: float | None = None
    # The reason of the first message deferred or failed in the pass, on one line (the relay's reply,
    # "[Errno 111] Connection refused"...): what the commands print when nobody configured logging.
    first_error: str | None = field(default=None, compare=False)

    @property
    def troubled(self) -> bool:
        """Did anything go wrong: a message deferred, failed or held back?"""
        return bool(self.deferred or self.failed or self.held)

    @property
    def idle(self) -> bool:
        """Did the pass find nothing to do (nothing sent, deferred, skipped, failed, held, or left for a limit)?"""
        return not (self.sent or self.skipped or self.troubled or self.paced_for is not None)

    def __str__(self) -> str:
        held = f", held back {self.held}" if self.held else ""
        paced = f"; rate limits: the rest can go in {self.paced_for:.1f}s" if self.paced_for is not None else ""
        return (
            f"sent {self.sent}, deferred {self.deferred}, skipped {self.skipped}, "
            f"failed {self.failed}{held} in {self.seconds:.2f}s{paced}"
        )

    def add(self, outcome: Outcome) -> None:
        """Count one message's outcome (:attr:`Outcome.counts <mailer.outcomes.Outcome.counts>` names the count)."""
        if outcome.counts is not None:
            setattr(self, outcome.counts, getattr(self, outcome.counts) + 1)
            if self.first_error is None and outcome.counts in ("deferred", "failed"):
                self.first_error = failure_text(outcome.logs) or None


@dataclass(frozen=True)
class MessageReport:
    """What became of one message in a pass, for ``-v 2``'s line per message."""

    result: str  # sent, deferred, skipped, failed or held
    to: str
    subject: str
    reason: str = ""

    @classmethod
    def of(cls, outcome: Outcome, email: Any) -> MessageReport:
        """The report of ``outcome`` for ``email`` (an ``EmailMessage``, or None when it cannot be read)."""
        to = ", ".join(map(str, email.to)) if email is not None else "?"
        subject = str(email.subject) if email is not None else "?"
        return cls(outcome.counts or "", to, subject, failure_text(outcome.logs))

    def __str__(self) -> str:
        line = f'{self.result:<8} to {loggable(self.to) or "(no To)"} "{loggable(self.subject)}"'
        return f"{line}: {loggable(self.reason)}" if self.reason else line


def log_sent(
    logger: logging.Logger, result: SendResult, stopped_by: BaseException | None = None, *, log_idle: bool = True
) -> None:
    """Log the line of a pass that ran: its counts, and the exception that stopped it if one did.

    A pass that ran to its end also puts its figures on the record (``sent``, ``deferred``,
    ``duration``) for handlers that emit structured logs. Without ``log_idle``, a pass that found nothing
    to do logs its line at the ``DEBUG`` level only (``runmailer_pg``'s heartbeat passes).
    """
    if stopped_by is None:
        # mailer_summary: what a command printing its own lines leaves out (mailer.management.output).
        extra = {"sent": result.sent, "deferred": result.deferred, "duration": result.seconds, "mailer_summary": True}
        level = logging.DEBUG if not log_idle and result.idle else logging.INFO
        logger.log(level, "Sent: %s", result, extra=extra)
    else:
        logger.info("Sent: %s, then stopped by %s", result, describe(stopped_by))


def log_lock_held(logger: logging.Logger, seconds: float) -> None:
    """Log the line of a run that sent nothing because another run holds the file lock."""
    logger.info("Sent: nothing in %.2fs, another run holds the lock %s.lock", seconds, lock_path())


def describe(exc: BaseException) -> str:
    """``ValueError: the text``, on one line (or the class name alone when the text is empty)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
