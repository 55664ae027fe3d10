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
4. With ``MAILER_ERROR_HANDLER`` left at its default, a relay asking to
   slow down (454, a 421 that says so, HTTP 429) is not the message's
   failure: it stays queued as it is and the relay is paused
   (:func:`throttled`). Any other failure that
   :func:`mailer.failures.classify` knows is a failed attempt
   (:func:`failed_attempt`): a transient one is tried again later, with
   backoff, until ``MAILER_RETRY_MAX_ATTEMPTS``; a permanent one leaves the
   queue (or is deferred, with ``MAILER_DEFER_PERMANENT_FAILURES``). Both
   are logged with the relay's reply. A message whose next attempt would
   come at or after its ``expires_at`` expires instead (:func:`expired`).
5. Anything else goes to ``MAILER_ERROR_HANDLER``, whose ``"sent"`` or
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
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

from mailer import failures, serialization, smtp
from mailer.conf import mailer_settings
from mailer.dispatch import Delivery
from mailer.dontsend import blocked_text
from mailer.failures import Failure
from mailer.logrows import log_fields
from mailer.logtext import PER_MESSAGE
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
    update: dict[str, Any] | None = None  # fields to change on the row, which stays queued (a retry)
    throttled: Failure | None = None  # the relay asked to slow down: pause it (mailer.pacing)
    block: tuple[str, ...] = ()  # addresses to add to the don't-send list

    @property
    def dealt_with(self) -> bool:
        """Has the message been sent, deferred, skipped or failed (what ``progress`` callbacks are told of)?"""
        return self.remove or self.put_aside or self.update is not None or self.counts == "deferred"

    @property
    def may_go_on(self) -> bool:
        """May the pass start more deliveries in this batch?"""
        return self.stop is None and not self.put_aside


# Left queued as it was, to be claimed again by the next batch (a relay at its rate limit).
UNTOUCHED = Outcome(None)


@dataclass
class Batch:
    """What one claimed batch did, written in one go (:func:`mailer.writes.record`) before its transaction commits."""

    claimed: int = 0
    done: list[int] = field(default_factory=list)  # rows to delete from the queue
    logs: list[dict] = field(default_factory=list)  # MessageLog rows (log_fields())
    log_pks: list[int] = field(default_factory=list)  # the queued message each of logs is about
    updates: list[tuple[int, dict]] = field(default_factory=list)  # (row, fields to change): retries
    block: list[str] = field(default_factory=list)  # addresses for the don't-send list
    error: BaseException | None = None  # re-raised once the batch is committed
    stopped_early: bool = False  # the commit interval ended before the claimed messages did
    more: bool = False  # the claim was as big as asked: the queue may hold more
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
        if outcome.update is not None:
            self.updates.append((message.pk, outcome.update))
        self.block.extend(outcome.block)
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
    if handler is handle_delivery_exception:  # the default policy: known failures are retried or given up
        failure = _classify(message, exc)
        if failure is not None and failure.throttled:
            return throttled(message, failure)
        if failure is not None and failure.kind is not None:
            refusals = _refusals(exc)
            if refusals is not None and smtp.refuses_all(email, (r.address for r in refusals)):
                return with_refusals(message, email, None, refusals)
            return failed_attempt(message, email, failure)
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
    return with_refusals(message, email, connection, refusals)


def with_refusals(
    message: Message, email: EmailMessage, connection: BaseEmailBackend | None, refusals: list[smtp.Refusal]
) -> Outcome:
    """Some recipients refused (``connection`` ``None``: all of them, the delivery raised).

    The accepted ones are logged as sent. The refused ones get a failure
    entry addressed to them alone, with the relay's replies. Those refused
    transiently, while attempts are left, stay queued: the row is rewritten
    to hold them alone, and tried again after the backoff, so that nobody
    who took the message gets it twice.
    """
    note = smtp.describe(refusals)
    text = "message %s: the relay refused %d recipient(s):\n%s"
    logger.warning(text, message.pk, len(refusals), note, extra=PER_MESSAGE)
    attempts = (message.attempts or 0) + 1
    again = [r for r in refusals if r.transient] if failures.attempts_left(attempts) else []
    given_up = [r for r in refusals if r not in again]
    logs = [] if connection is None else [log_fields(message, email, RESULT_SUCCESS, note)]
    if given_up:
        gone = smtp.describe(given_up)
        if any(r.transient for r in given_up):  # refused for now, but out of attempts
            ending = "deferred" if connection is None and mailer_settings.DEFER_PERMANENT_FAILURES else "giving up"
            gone = f"{gone}\n({ending} after {attempts} attempts: MAILER_RETRY_MAX_ATTEMPTS)"
        logs.append(log_fields(message, smtp.refused_part(email, given_up), RESULT_FAILURE, gone))
    block = ()
    if mailer_settings.DONT_SEND_UNKNOWN_RECIPIENTS:
        block = tuple(r.address for r in given_up if r.failure.user_unknown)
    when = failures.next_attempt(attempts) if again else None
    reason = smtp.describe(again)
    too_late = bool(again) and _too_late(message, when)
    if too_late:  # the next attempt would come after the message expires
        logs.append(expired(message, smtp.refused_part(email, again), when, reason).logs[0])
        again = []
    if not again:
        if connection is None and mailer_settings.DEFER_PERMANENT_FAILURES and not too_late:
            return _deferred(tuple(logs), attempts, gone, block)  # nobody took it: deferred, as in 2.3.2
        counts = "sent" if connection is not None else "failed"
        return Outcome(counts, tuple(logs), remove=True, keep=connection, block=block)
    part = smtp.refused_part(email, again)
    logs.append(log_fields(message, part, RESULT_FAILURE, _will_retry(reason, attempts, when)))
    update = {"not_before": when, "attempts": attempts, "last_error": reason, "message_data": serialization.dumps(part)}
    counts = "sent" if connection is not None else "deferred"
    return Outcome(counts, tuple(logs), pass_over=True, keep=connection, update=update, block=block)


def throttled(message: Message, failure: Failure) -> Outcome:
    """The relay asked to slow down: not a failed attempt. The message stays as it was, for after the pause."""
    logger.info("message %s: the relay asked to slow down (%s); it goes after the pause", message.pk, failure.reason)
    return Outcome(None, throttled=failure)


def failed_attempt(message: Message, email: EmailMessage, failure: Failure) -> Outcome:
    """A delivery that failed as a whole, for a reason :func:`mailer.failures.classify` knows.

    Transient, with attempts left: the row stays queued, not to be tried
    before its next attempt time. Permanent, or out of attempts: logged and
    removed (deferred instead with ``MAILER_DEFER_PERMANENT_FAILURES``).
    A new connection is made for the next message either way.
    """
    attempts = (message.attempts or 0) + 1
    if failure.transient and failures.attempts_left(attempts):
        when = failures.next_attempt(attempts)
        if _too_late(message, when):
            return expired(message, email, when, f"attempt {attempts} failed: {failure.reason}")
        text = "message %s: attempt %d failed (%s); trying again at %s"
        logger.info(text, message.pk, attempts, failure.reason, when, extra=PER_MESSAGE)
        log = log_fields(message, email, RESULT_FAILURE, _will_retry(failure.reason, attempts, when))
        update = {"not_before": when, "attempts": attempts, "last_error": failure.reason}
        return Outcome("deferred", (log,), pass_over=True, update=update)
    reason = failure.reason
    if failure.transient:
        ending = "deferred" if mailer_settings.DEFER_PERMANENT_FAILURES else "giving up"
        reason = f"{reason} ({ending} after {attempts} attempts: MAILER_RETRY_MAX_ATTEMPTS)"
    logger.warning("message %s failed for good: %s", message.pk, reason, extra=PER_MESSAGE)
    log = log_fields(message, email, RESULT_FAILURE, reason)
    block = ()
    if mailer_settings.DONT_SEND_UNKNOWN_RECIPIENTS and failure.user_unknown and len(set(email.recipients())) == 1:
        block = tuple(email.recipients())  # one recipient: the reply is about that mailbox
    if mailer_settings.DEFER_PERMANENT_FAILURES:
        return _deferred((log,), attempts, reason, block)
    return Outcome("failed", (log,), remove=True, block=block)


def _deferred(logs: tuple[dict, ...], attempts: int, reason: str, block: tuple[str, ...]) -> Outcome:
    """``MAILER_DEFER_PERMANENT_FAILURES``: deferred as django-mailer 2.3.2 did, so counted as deferred.

    That is what ``MAILER_EMAIL_MAX_DEFERRED`` and the summary count; the
    message waits for ``retry_deferred``. Its log rows carry the deferred
    priority, as 2.3.2's, which deferred the message before logging it.
    """
    logs = tuple({**log, "priority": PRIORITY_DEFERRED} for log in logs)
    update = {"priority": PRIORITY_DEFERRED, "attempts": attempts, "last_error": reason, "not_before": None}
    return Outcome("deferred", logs, pass_over=True, update=update, block=block)


def _classify(message: Message, exc: Exception) -> Failure | None:
    """:func:`mailer.failures.classify`, which must not raise here: the batch's deliveries are not recorded yet.

    A project's classifier that fails, or an exception that cannot even be
    described, leaves the failure to the error handler (a poison message, then).
    """
    try:
        return failures.classify(exc)
    except Exception:
        logger.exception("message %s: could not classify the failure of its delivery", message.pk)
        return None


def expired(message: Message, email: EmailMessage | None, next_attempt: Any = None, reason: str = "") -> Outcome:
    """Its ``expires_at`` passed before it could be sent, or comes before its ``next_attempt``: never sent.

    Removed from the queue (also with ``MAILER_DEFER_PERMANENT_FAILURES``: a
    deferred message could be sent by ``retry_deferred``) and logged as a
    failure whose text starts with ``expired:`` and says when.
    """
    text = f"expired: at {message.expires_at.isoformat()} (expires_at), before it could be sent"
    if next_attempt is not None:
        text = f"{text}: its next attempt would have been at {next_attempt.isoformat()}"
    if reason:
        text = f"{text}\n{reason}"
    logger.warning("message %s not sent: %s", message.pk, text.replace("\n", "; "), extra=PER_MESSAGE)
    return Outcome("failed", (log_fields(message, email, RESULT_FAILURE, text),), remove=True)


def _too_late(message: Message, when: Any) -> bool:
    """Would an attempt at ``when`` come at or after the message's ``expires_at``?"""
    return message.expires_at is not None and when >= message.expires_at


def _will_retry(reason: str, attempts: int, when: Any) -> str:
    return f"{reason}\n[attempt {attempts} of {mailer_settings.RETRY_MAX_ATTEMPTS}; trying again at {when.isoformat()}]"


def _refusals(exc: Exception) -> list[smtp.Refusal] | None:
    """Every recipient refused at RCPT (``SMTPRecipientsRefused``): each with its own reply."""
    if not isinstance(exc, smtplib.SMTPRecipientsRefused) or not exc.recipients:
        return None
    return [
        smtp.Refusal(address, code, reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply))
        for address, (code, reply) in exc.recipients.items()
    ]


def relay_down() -> Outcome:
    """Not tried: its mailer did not answer earlier in this pass. It waits for the next pass."""
    return Outcome(None, pass_over=True)


def blocked(message: Message, email: EmailMessage) -> Outcome:
    """None of its recipients is left after the don't-send list: logged as such (with the blocked addresses, which
    the logged email keeps) and removed."""
    logger.info("not sending message %s: no recipient left after the don't send list", message.pk, extra=PER_MESSAGE)
    text = blocked_text(email, "no recipient left")
    return Outcome("skipped", (log_fields(message, email, RESULT_DONT_SEND, text),), remove=True)


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
        extra=PER_MESSAGE,
    )
    if not message.message_data:
        return Outcome(None, remove=True)
    entry = {
        **log_fields(message, None, RESULT_FAILURE),
        "message_data": message.message_data,
        "log_message": f"message discarded due to failure in converting from DB: {exc}",
    }
    return Outcome("failed", (entry,), remove=True)
