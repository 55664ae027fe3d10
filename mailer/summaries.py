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
from dataclasses import dataclass

from mailer.choices import RESULT_FAILURE as FAILURE
from mailer.locking import lock_path
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
    # The text of the first failure this pass logged (a relay's reply, "Connection refused"...), for a person.
    first_error: str | None = None

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
        if self.first_error is None:
            self.first_error = next((log["log_message"] for log in outcome.logs if log["result"] == FAILURE), None)


def log_sent(logger: logging.Logger, result: SendResult, stopped_by: BaseException | None = None) -> None:
    """Log the line of a pass that ran: its counts, and the exception that stopped it if one did.

    A pass that ran to its end also puts its figures on the record (``sent``, ``deferred``,
    ``duration``) for handlers that emit structured logs.
    """
    if stopped_by is None:
        extra = {"sent": result.sent, "deferred": result.deferred, "duration": result.seconds}
        logger.info("Sent: %s", result, extra=extra)
    else:
        logger.info("Sent: %s, then stopped by %s", result, describe(stopped_by))


def log_lock_held(logger: logging.Logger, seconds: float) -> None:
    """Log the line of a run that sent nothing because another run holds the file lock."""
    logger.info("Sent: nothing in %.2fs, another run holds the lock %s.lock", seconds, lock_path())


def describe(exc: BaseException) -> str:
    """``ValueError: the text``, on one line (or the class name alone when the text is empty)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
