"""Send the queue: claim a batch, hand each message to the real backend, log, commit.

Nothing here is specific to a database; :mod:`mailer.claims` holds that.

Delivery semantics, per transaction: a sender claims up to
``MAILER_COMMIT_BATCH_SIZE`` messages (locked against other senders), hands
them to the backend one by one, and commits the results (log rows written,
sent rows deleted) after that many messages or ``MAILER_COMMIT_INTERVAL``
seconds, whichever comes first. Claimed messages it did not reach are
released by the same commit. If the sender dies before a commit, the
messages it handed to the backend in that transaction are still queued and
will be sent again: at most the batch size, and in practice the messages
sent within one commit interval.
"""

from __future__ import annotations

import dataclasses
import logging
import smtplib
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import make_msgid
from django.core.mail.utils import DNS_NAME
from django.db import DatabaseError, close_old_connections, connections, router, transaction
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from mailer import claims, serialization, smtp, writes
from mailer.claimed import ClaimedMessages, QueueNotDecodable, Readable, release
from mailer.conf import mailer_settings
from mailer.locking import acquire_lock, release_lock
from mailer.logtext import loggable
from mailer.models import (
    PRIORITY_DEFERRED,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    Message,
    MessageLog,
    get_message_id,
    log_fields,
)
from mailer.routing import Outcome, Route, deliver, routes
from mailer.summaries import SendResult, log_sent

__all__ = [
    "QueueNotDecodable",
    "SendResult",
    "acquire_lock",
    "handle_delivery_exception",
    "prioritize",
    "release_lock",
    "send_all",
    "send_loop",
]

logger = logging.getLogger(__name__)

DEFERRABLE_EXCEPTIONS = (
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPDataError,
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    OSError,  # socket.error
)


def prioritize(queryset: QuerySet | None = None) -> QuerySet:
    """The queue (or ``queryset``) in the order it is sent: high, medium, low; oldest first; never deferred."""
    return claims.in_send_order(queryset)


def handle_delivery_exception(
    connection: BaseEmailBackend | None, message: Message, exc: Exception
) -> tuple[BaseEmailBackend | None, str]:
    """The default ``MAILER_ERROR_HANDLER``.

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


@dataclass
class _Batch:
    """Results of one claimed batch, written in bulk before its transaction commits."""

    done: list[int] = field(default_factory=list)  # rows to delete from the queue
    logs: list[dict] = field(default_factory=list)  # MessageLog rows (log_fields())
    log_pks: list[int] = field(default_factory=list)  # the queued message each of logs is about
    error: BaseException | None = None  # re-raised once the batch is committed
    stopped_early: bool = False  # the commit interval ended before the claimed messages did
    quick: bool = False  # all sent within half the commit interval: claim more next time
    held: int = 0  # messages held back (see ClaimedMessages.hold)
    log_bytes: int = 0  # message data the log rows hold

    def log(self, message: Message, fields: dict) -> None:
        self.logs.append(fields)
        self.log_pks.append(message.pk)
        data = fields.get("message_data")
        if data:
            self.log_bytes += len(data)


# A batch is committed early once its log rows hold this much message data: a run of big messages
# then holds about one at a time, not a whole claim's worth.
LOG_BYTES_PER_COMMIT = 8 * 1024 * 1024


Slot = dict  # one connection per real mailer (Route -> backend), used by one delivery at a time


class _Delivered:
    """What :meth:`_Sender.start` returns for a delivery made in the calling thread.

    Has the part of a :class:`~concurrent.futures.Future`'s interface that
    :meth:`_Sender.send` uses, without the lock a Future creates.
    """

    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def result(self) -> Outcome:
        return self.outcome


class _Sender(ClaimedMessages):
    """One pass over the queue. Holds the backend connections and the counts.

    Everything that touches the database happens in the calling thread. With
    ``MAILER_SENDER_CONNECTIONS`` = N > 1, N worker threads hand messages of
    the claimed batch to the backend at once, each through connections of its
    own (a *slot*); results are logged, and the error handler called, back in
    the calling thread, in the order deliveries finish.
    """

    def __init__(
        self,
        queryset: QuerySet | None,
        routes: dict[str | None, Route],
        stop: threading.Event | None = None,
        progress: Callable[[SendResult], None] | None = None,
        on_commit: Callable[[SendResult], None] | None = None,
    ) -> None:
        self.routes = routes
        self.stop = stop
        self.progress = progress
        self.on_commit = on_commit
        self.using = router.db_for_write(Message)
        self.claim = claims.Claimer(queryset, self.using)
        self.error_handler = import_string(mailer_settings.ERROR_HANDLER)
        self.throttle = mailer_settings.EMAIL_THROTTLE
        # A throttle means one message at a time, whatever the number of connections.
        size = 1 if self.throttle else max(1, int(mailer_settings.SENDER_CONNECTIONS))
        self.slots: list[Slot] = [{} for _ in range(size)]  # idle slots; connections are reused all pass
        self.all_slots = list(self.slots)
        self.executor = ThreadPoolExecutor(size, thread_name_prefix="mailer-send") if size > 1 else None
        self.result = SendResult()
        # The last message (in send order) left queued and not to be claimed again in this pass.
        self.position: claims.Position | None = None
        # Real mailers that did not answer in this pass: their other messages wait for the next one.
        self.down: set[Route] = set()
        # Read once per pass: they are asked about after every message.
        self.batch_size = mailer_settings.COMMIT_BATCH_SIZE
        self.commit_interval = mailer_settings.COMMIT_INTERVAL
        self.add_message_id = mailer_settings.ADD_MESSAGE_ID
        self.max_batch = mailer_settings.EMAIL_MAX_BATCH
        self.max_deferred = mailer_settings.EMAIL_MAX_DEFERRED
        self.claim_size = self.batch_size
        self.limit_logged = False

    def run(self) -> SendResult:
        started = time.monotonic()
        try:
            while not self.limits_reached() and not self.stopping():
                batch = _Batch()
                with transaction.atomic(using=self.using):
                    messages = self.claim(1 if self.throttle else self.claim_size, self.position)
                    if not messages:
                        break
                    try:
                        self.process(messages, batch)
                    except (KeyboardInterrupt, SystemExit) as stop:
                        # Keep what was sent before the interruption, then stop.
                        batch.error = stop
                    self.write(batch)
                # Committed: only now do this batch's outcomes count for those who were told about commits.
                if self.on_commit is not None:
                    self.on_commit(dataclasses.replace(self.result, seconds=0.0))
                self.adapt_claim_size(batch)
                if batch.error is not None:
                    raise batch.error
                if self.throttle:
                    logger.debug("Throttling email delivery. Sleeping %s seconds", self.throttle)
                    _nap(self.throttle, self.stop)
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)
            for slot in self.all_slots:
                for route in list(slot):
                    self.discard_connection(slot, route)
            self.result.seconds = time.monotonic() - started
        return self.result

    def process(self, messages: list[Message], batch: _Batch) -> None:
        self.send(self.read_claim(messages, batch), batch)
        self.stop_if_nothing_decodes(messages, batch)

    def send(self, sendable: list[tuple[Message, Readable]], batch: _Batch) -> None:
        """Hand messages to the backend, up to one per idle slot at a time, until the batch is done.

        Stops taking new ones at a poison message, a limit, a stop request or
        the end of the commit interval; deliveries in flight are always
        waited for and recorded.
        """
        started = time.monotonic()
        deadline = started + self.commit_interval
        todo = iter(sendable)
        in_flight: dict[Future | _Delivered, tuple[Message, EmailMessage, Route, Slot]] = {}
        taking = True
        while True:
            while taking and self.slots and self.room_for(len(in_flight)):
                item = next(todo, None)
                if item is None:
                    taking = False
                    break
                message, email = item
                if email is None:  # a big message, not read with the claim
                    email = self.prepare_big(message, batch)
                    if email is None:
                        continue
                elif isinstance(email, serialization.NotDecodableHere):
                    self.hold(message, email, batch)  # passed over now that its turn has come
                    continue
                route = self.routes.get(message.mailer, self.routes[None])
                if route in self.down:
                    self.pass_over(message)
                    release(message)
                    continue
                slot = self.slots.pop()
                in_flight[self.start(slot, route, email)] = (message, email, route, slot)
            if not in_flight:
                batch.quick = time.monotonic() - started < self.commit_interval / 2
                return
            if self.executor is None:
                done = list(in_flight)  # delivered already, in this thread
            else:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                message, email, route, slot = in_flight.pop(future)
                outcome = future.result()
                if outcome.exception is not None and self.stopping():
                    # Most likely cut short by a stop request (mailer.smtp.interrupt()): not the message's fault.
                    self.discard_connection(slot, route)
                    self.pass_over(message)
                    release(message)
                    self.slots.append(slot)
                    taking = False
                    continue
                if outcome.relay_down:
                    self.relay_is_down(route, outcome.exception)
                ok = self.record(message, email, route, slot, outcome.exception, batch, outcome.refusals)
                release(message)
                self.report()
                self.slots.append(slot)
                if not ok or self.limits_reached() or self.stopping():
                    taking = False
                elif batch.log_bytes >= LOG_BYTES_PER_COMMIT:
                    taking = False  # commit what the batch holds before reading more big messages
            if taking and time.monotonic() >= deadline:
                taking = False
                batch.stopped_early = next(todo, None) is not None

    def start(self, slot: Slot, route: Route, email: EmailMessage) -> Future | _Delivered:
        if self.add_message_id and get_message_id(email) is None:
            # Set here, not left to the backend, so that the log records the Message-ID that went out.
            email.extra_headers["Message-ID"] = make_msgid(domain=DNS_NAME)
        if logger.isEnabledFor(logging.INFO):
            logger.info("sending message '%s' to %s", loggable(email.subject), loggable(", ".join(map(str, email.to))))
        if self.executor is not None:
            return self.executor.submit(deliver, slot, route, email)
        return _Delivered(deliver(slot, route, email))

    def room_for(self, in_flight: int) -> bool:
        """May another delivery start without overshooting ``MAILER_EMAIL_MAX_BATCH``?"""
        max_batch = self.max_batch
        return max_batch is None or self.result.sent + in_flight < max_batch

    def record(
        self,
        message: Message,
        email: EmailMessage,
        route: Route,
        slot: Slot,
        exc: Exception | None,
        batch: _Batch,
        refusals: list[smtp.Refusal] | None = None,
    ) -> bool:
        """Log one finished delivery; False when no new one may start (a poison message)."""
        if exc is not None:
            return self.handle_exception(message, email, route, slot, exc, batch)
        if refusals:
            # Sent, but not to everyone: say so in the success entry, and keep a failure entry
            # addressed to the refused recipients only (requeuing it sends to them alone).
            note = smtp.describe(refusals)
            batch.log(message, log_fields(message, email, RESULT_SUCCESS, note))
            batch.log(message, log_fields(message, smtp.refused_part(email, refusals), RESULT_FAILURE, note))
            logger.warning("message %s: the relay refused %d recipient(s):\n%s", message.pk, len(refusals), note)
        else:
            batch.log(message, log_fields(message, email, RESULT_SUCCESS))
        batch.done.append(message.pk)
        self.result.sent += 1
        return True

    def handle_exception(
        self, message: Message, email: EmailMessage, route: Route, slot: Slot, exc: Exception, batch: _Batch
    ) -> bool:
        if isinstance(exc, ImproperlyConfigured):
            # The configuration, not this message, is at fault (a backend that cannot be set up):
            # leave the message queued as it is, keep what this batch did, and stop.
            self.discard_connection(slot, route)
            if batch.error is None:
                batch.error = exc
            return False
        try:
            # In a savepoint: a handler whose own writes fail (a log row the table refuses) must not
            # leave the transaction unusable, which would undo the whole batch.
            with transaction.atomic(using=self.using):
                connection, action = self.error_handler(slot.get(route), message, exc)
            if action not in ("sent", "deferred"):
                raise ValueError(f"MAILER_ERROR_HANDLER returned {action!r}; expected 'sent' or 'deferred'")
        except Exception as error:
            # A poison message: put it aside with the traceback, keep what this
            # batch did, and re-raise once that is committed.
            self.discard_connection(slot, route)
            Message.objects.using(self.using).filter(pk=message.pk).update(priority=PRIORITY_DEFERRED)
            message.priority = PRIORITY_DEFERRED
            batch.log(message, log_fields(message, email, RESULT_FAILURE, traceback.format_exc()))
            logger.error("message %s deferred: sending it raised %r", message.pk, error)
            self.result.failed += 1
            if batch.error is None:
                batch.error = error
            return False
        if connection is not slot.get(route):
            self.discard_connection(slot, route)
            if connection is not None:
                slot[route] = connection
        if action == "sent":
            batch.log(message, log_fields(message, email, RESULT_SUCCESS))
            batch.done.append(message.pk)
            self.result.sent += 1
        else:
            if message.priority != PRIORITY_DEFERRED:
                self.pass_over(message)
            self.result.deferred += 1
        return True

    def pass_over(self, message: Message) -> None:
        """Leave the claimed ``message`` queued, untouched, and do not claim it again in this pass.

        The next claims start after it in send order (and after any message
        passed over before), so they stay the same size however many messages
        are passed over. Messages after it that this pass had claimed but not
        reached are still claimed again; messages before it that another
        sender held, or that were queued meanwhile with a higher priority, wait
        for the next pass.
        """
        key = (message.priority, message.when_added, message.pk)
        if self.position is None or key > self.position:
            self.position = key

    def write(self, batch: _Batch) -> None:
        writes.record(batch.logs, batch.log_pks, batch.done, self.using)

    def adapt_claim_size(self, batch: _Batch) -> None:
        # Claim about as many rows as one commit interval takes, so a slow
        # relay does not fetch (and release) a hundred payloads per message.
        maximum = self.batch_size
        if batch.stopped_early:
            self.claim_size = max(1, min(maximum, len(batch.done)))
        elif batch.quick:
            self.claim_size = min(maximum, 2 * self.claim_size)

    def relay_is_down(self, route: Route, exc: Exception | None) -> None:
        if route not in self.down:
            self.down.add(route)
            logger.warning(
                "%s did not answer (%s); its other messages wait for the next pass", route, exc or "no reply"
            )

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def report(self) -> None:
        """Hand a copy of the counts so far to the ``progress`` callback, if any; it can't break the pass."""
        if self.progress is None:
            return
        try:
            result = self.result
            self.progress(dataclasses.replace(result, seconds=0.0))
        except Exception:
            logger.warning("the progress callback raised; not calling it again in this pass", exc_info=True)
            self.progress = None

    def limits_reached(self) -> bool:
        # Asked after each message and again before each claim: say it once.
        max_batch = self.max_batch
        if max_batch is not None and self.result.sent >= max_batch:
            if not self.limit_logged:
                logger.info("EMAIL_MAX_BATCH (%s) reached, stopping for this round", max_batch)
                self.limit_logged = True
            return True
        max_deferred = self.max_deferred
        if max_deferred is not None and self.result.deferred >= max_deferred:
            if not self.limit_logged:
                logger.warning("EMAIL_MAX_DEFERRED (%s) reached, stopping for this round", max_deferred)
                self.limit_logged = True
            return True
        return False

    def discard_connection(self, slot: Slot, route: Route) -> None:
        connection = slot.pop(route, None)
        if connection is not None:
            try:
                connection.close()
            except Exception:
                logger.debug("closing a failed connection raised", exc_info=True)


def _nap(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep, cut short when ``stop`` is set; True if it is."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


def send_all(
    queryset: QuerySet | None = None,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[SendResult], None] | None = None,
    on_commit: Callable[[SendResult], None] | None = None,
) -> SendResult | None:
    """Send the queue once (or the messages of ``queryset``).

    Returns what was done, or ``None`` when another run holds the lock.
    Setting ``stop`` (from another thread or a signal handler) ends the pass
    after the message in hand, with everything sent so far committed.
    ``progress``, if given, is called with the counts so far (a copy of the
    :class:`SendResult`, ``seconds`` still 0) each time a message has been
    dealt with: sent, deferred, skipped or failed, its outcome recorded for
    the commit of its batch. It runs in the calling thread, never in a
    delivery thread; an exception from it is logged and it is not called again.
    ``on_commit``, if given, is called with a copy of the counts after each
    batch's transaction commits: unlike ``progress``, it never counts
    outcomes that a failure or an interruption rolled back.
    Re-raises an exception the error handler re-raised, after putting that
    message aside (deferred, with the traceback in the log).
    """
    routes_now = routes()  # Refuse a configuration that cannot send before touching anything.
    lock = None
    if mailer_settings.USE_FILE_LOCK:
        acquired, lock = acquire_lock()
        if not acquired:
            return None
    try:
        result = _Sender(queryset, routes_now, stop, progress, on_commit).run()
    finally:
        if lock is not None:
            release_lock(lock)
    log_sent(logger, result)
    return result


def send_loop(*, stop: threading.Event | None = None, on_pass: Callable[[SendResult], None] | None = None) -> None:
    """Send forever (or until ``stop`` is set): wait while nothing is queued, then :func:`send_all`.

    An exception from one pass is logged and the loop goes on; the message
    that caused it has been deferred, so the next pass sends the rest. A
    database that cannot be reached (server restart, failover, network) is
    tried again after 1 s, doubling up to :data:`MAX_DATABASE_RETRY_DELAY`;
    only ``ImproperlyConfigured`` ends the loop.
    ``on_pass``, if given, is called with the result of each pass that ran.
    """
    outages = 0  # database errors in a row
    while stop is None or not stop.is_set():
        sleep: Any = mailer_settings.EMPTY_QUEUE_SLEEP
        try:
            close_old_connections()
            while not Message.objects.non_deferred().exists():
                outages = 0
                logger.debug("sleeping for %s seconds before checking queue again", sleep)
                if _nap(sleep, stop):
                    return
                close_old_connections()
            outages = 0
            result = send_all(stop=stop)
        except ImproperlyConfigured:
            raise
        except DatabaseError as exc:
            delay = min(2**outages, MAX_DATABASE_RETRY_DELAY)
            outages += 1
            log = logger.warning if outages == 1 else logger.info
            log("the database is unreachable (%s); trying again in %ss", " ".join(str(exc).split()), delay)
            _drop_database_connection()
            _nap(delay, stop)
            continue
        except Exception:
            logger.exception("sending failed; carrying on")
            _nap(min(sleep, 1), stop)
            continue
        if result is not None and on_pass is not None:
            on_pass(result)
        if result is None or result.sent == 0:
            _nap(sleep, stop)


MAX_DATABASE_RETRY_DELAY = 30  # seconds between attempts to reach a database that is down, at most


def _drop_database_connection() -> None:
    """Close the queue's database connection, broken or not: the next query makes a new one."""
    try:
        connections[router.db_for_write(Message)].close()
    except Exception:
        logger.debug("closing a broken database connection raised", exc_info=True)
