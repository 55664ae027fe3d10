"""The error policy: what a finished delivery, or a message that cannot be sent, means for its queued message.

Each function here returns an :class:`Outcome`, a value the sending loop
(:mod:`mailer.engine`) applies: log rows to write with the batch, whether
the row leaves the queue, is put aside (deferred) or is left queued for a
later pass, which connection to keep, and whether the pass must stop. The
loop adds outcomes up per batch (:class:`Batch`: what its commit records)
and per pass (:class:`~mailer.summaries.SendResult`: the counts). Only
the project's ``MAILER_ERROR_HANDLER`` writes to the database from here,
as django-mailer 2.x's handlers always have, inside a savepoint.

The rules, in the order :func:`judge` applies them:

1. No exception: sent (with a failure entry for the recipients the relay
   refused, if it refused some).
2. A failure while the pass is being stopped: the stop's doing, not the
   message's; it stays queued.
3. ``ImproperlyConfigured``: the configuration, not the message, is at
   fault; the message stays queued and the pass stops.
4. Anything else goes to ``MAILER_ERROR_HANDLER``, whose ``"sent"`` or
   ``"deferred"`` is followed. A handler that raises (the default one does
   for exceptions it does not know) marks a *poison message*: it is put
   aside with the traceback, and the pass stops once the batch is recorded.
"""

from __future__ import annotations

import logging
import smtplib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

from mailer import serialization, smtp
from mailer.dispatch import Delivery
from mailer.logrows import log_fields
from mailer.models import PRIORITY_DEFERRED, RESULT_DONT_SEND, RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog

logger = logging.getLogger("mailer.engine")  # what these messages have always been logged on

ErrorHandler = Callable[[BaseEmailBackend | None, Message, Exception], tuple[BaseEmailBackend | None, str]]

DEFERRABLE_EXCEPTIONS = (
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPDataError,
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    OSError,  # socket.error
)


def handle_delivery_exception(
    connection: BaseEmailBackend | None, message: Message, exc: Exception
) -> tuple[BaseEmailBackend | None, str]:
    """The default ``MAILER_ERROR_HANDLER`` (importable as ``mailer.engine.handle_delivery_exception``).

    Defers the message and logs the failure for SMTP authentication, data,
    recipient and sender errors and network errors, asking for a new
    connection; re-raises anything else.
    """
    if isinstance(exc, DEFERRABLE_EXCEPTIONS):
        message.defer()
        logger.info("message deferred due to failure: %s", exc)
        MessageLog.objects.log(message, RESULT_FAILURE, log_message=str(exc))
        return None, "deferred"
    raise exc


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed message, for the sending loop to apply.

    ``counts`` names the :class:`~mailer.summaries.SendResult` count it adds
    to (``None``: none). ``keep`` is the connection the delivery's slot
    keeps for its route (``None``: close it).
    """

    counts: str | None
    logs: tuple[dict, ...] = ()  # log rows (log_fields()) to write with the batch
    remove: bool = False  # delete the row from the queue
    put_aside: bool = False  # defer the row now: it waits for retry_deferred
    pass_over: bool = False  # leave the row queued, not to be claimed again in this pass
    keep: BaseEmailBackend | None = None
    stop: BaseException | None = None  # end the pass (re-raised) once the batch is recorded

    @property
    def dealt_with(self) -> bool:
        """Has the message been sent, deferred, skipped or failed (what ``progress`` callbacks are told of)?"""
        return self.remove or self.put_aside or self.counts == "deferred"

    @property
    def may_go_on(self) -> bool:
        """May the pass start more deliveries in this batch?"""
        return self.stop is None and not self.put_aside


@dataclass
class Batch:
    """What one claimed batch did, written in one go (:func:`mailer.writes.record`) before its transaction commits."""

    claimed: int = 0
    done: list[int] = field(default_factory=list)  # rows to delete from the queue
    logs: list[dict] = field(default_factory=list)  # MessageLog rows (log_fields())
    log_pks: list[int] = field(default_factory=list)  # the queued message each of logs is about
    error: BaseException | None = None  # re-raised once the batch is committed
    stopped_early: bool = False  # the commit interval ended before the claimed messages did
    quick: bool = False  # all sent within half the commit interval: claim more next time
    held: int = 0  # messages held back (outcomes.held())
    log_bytes: int = 0  # message data the log rows hold

    def add(self, message: Message, outcome: Outcome) -> None:
        """Take ``outcome``'s writes for ``message``, and its stop."""
        for fields in outcome.logs:
            self.logs.append(fields)
            self.log_pks.append(message.pk)
            data = fields.get("message_data")
            if data:
                self.log_bytes += len(data)
        if outcome.remove:
            self.done.append(message.pk)
        if outcome.counts == "held":
            self.held += 1
        if outcome.stop is not None and self.error is None:
            self.error = outcome.stop

    def full(self) -> bool:
        """Do its log rows hold enough message data to commit before reading more big messages?"""
        return self.log_bytes >= LOG_BYTES_PER_COMMIT


# A batch is committed early once its log rows hold this much message data: a run of big messages
# then holds about one at a time, not a whole claim's worth.
LOG_BYTES_PER_COMMIT = 8 * 1024 * 1024


def judge(
    delivery: Delivery, message: Message, handler: ErrorHandler, using: str, *, stopping: bool = False
) -> Outcome:
    """What ``delivery`` of ``message`` means; may call ``handler`` (in a savepoint on ``using``)."""
    email, exc = delivery.email, delivery.exception
    if exc is None:
        return sent(message, email, delivery.connection, delivery.refusals)
    if stopping:
        # Most likely cut short by a stop request (mailer.smtp.interrupt()): not the message's fault.
        return Outcome(None, pass_over=True)
    if isinstance(exc, ImproperlyConfigured):
        # A backend that cannot be set up: leave the message queued as it is, keep what the batch did, stop.
        return Outcome(None, stop=exc)
    connection = delivery.connection
    try:
        # In a savepoint: a handler whose own writes fail (a log row the table refuses) must not
        # leave the transaction unusable, which would undo the whole batch.
        with transaction.atomic(using=using):
            connection, action = handler(connection, message, exc)
        if action not in ("sent", "deferred"):
            raise ValueError(f"MAILER_ERROR_HANDLER returned {action!r}; expected 'sent' or 'deferred'")
    except Exception as error:
        logger.error("message %s deferred: sending it raised %r", message.pk, error)
        failure = log_fields(message, email, RESULT_FAILURE, traceback.format_exc())
        return Outcome("failed", (failure,), put_aside=True, stop=error)
    if action == "sent":
        return sent(message, email, connection)
    # The handler may have deferred the message itself (the default one does); otherwise it stays queued.
    return Outcome("deferred", pass_over=message.priority != PRIORITY_DEFERRED, keep=connection)


def sent(
    message: Message,
    email: EmailMessage,
    connection: BaseEmailBackend | None,
    refusals: list[smtp.Refusal] | None = None,
) -> Outcome:
    """Accepted by the mailer: logged and removed from the queue."""
    if not refusals:
        return Outcome("sent", (log_fields(message, email, RESULT_SUCCESS),), remove=True, keep=connection)
    # Sent, but not to everyone: say so in the success entry, and keep a failure entry
    # addressed to the refused recipients only (requeuing it sends to them alone).
    note = smtp.describe(refusals)
    logger.warning("message %s: the relay refused %d recipient(s):\n%s", message.pk, len(refusals), note)
    logs = (
        log_fields(message, email, RESULT_SUCCESS, note),
        log_fields(message, smtp.refused_part(email, refusals), RESULT_FAILURE, note),
    )
    return Outcome("sent", logs, remove=True, keep=connection)


def relay_down() -> Outcome:
    """Not tried: its mailer did not answer earlier in this pass. It waits for the next pass."""
    return Outcome(None, pass_over=True)


def blocked(message: Message, email: EmailMessage) -> Outcome:
    """None of its recipients is left after the don't-send list: logged as such and removed."""
    logger.info("not sending message %s: no recipient left after the don't send list", message.pk)
    return Outcome("skipped", (log_fields(message, email, RESULT_DONT_SEND, "no recipient left"),), remove=True)


def held(message: Message, exc: serialization.NotDecodableHere) -> Outcome:
    """Intact, but this process cannot decode it: left queued, with why and what to fix."""
    logger.error("message %s (queued on %s) held back, left on the queue: %s", message.pk, message.when_added, exc)
    return Outcome("held", pass_over=True)


def discarded(message: Message, exc: serialization.UndecodableMessage) -> Outcome:
    """Corrupt data: removed from the queue; its raw data kept in the log, if it had any."""
    logger.warning(
        "message discarded due to failure in converting from DB. Added on '%s' with priority '%s': %s",
        message.when_added,
        message.priority,
        exc,
    )
    if not message.message_data:
        return Outcome(None, remove=True)
    entry = {
        **log_fields(message, None, RESULT_FAILURE),
        "message_data": message.message_data,
        "log_message": f"message discarded due to failure in converting from DB: {exc}",
    }
    return Outcome("failed", (entry,), remove=True)
