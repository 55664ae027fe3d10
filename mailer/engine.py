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
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.db import DatabaseError, close_old_connections, connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from mailer import claims, outcomes, serialization, writes
from mailer.conf import mailer_settings
from mailer.dispatch import Dispatcher
from mailer.limits import PassLimits
from mailer.locking import acquire_lock, release_lock
from mailer.logtext import loggable
from mailer.message_ids import get_message_id, new_message_id
from mailer.models import PRIORITY_DEFERRED, Message
from mailer.outcomes import DEFERRABLE_EXCEPTIONS, Batch, Outcome, handle_delivery_exception
from mailer.pacing import Pacer
from mailer.reading import QueueNotDecodable, Readable, Reader, release
from mailer.routing import Route, routes
from mailer.summaries import SendResult, log_sent
from mailer.wakeups import idle_wait, until_due

__all__ = [
    "DEFERRABLE_EXCEPTIONS",
    "QueueNotDecodable",
    "SendResult",
    "acquire_lock",
    "handle_delivery_exception",
    "idle_wait",
    "prioritize",
    "release_lock",
    "send_all",
    "send_loop",
    "until_due",
]

logger = logging.getLogger(__name__)


def prioritize(queryset: QuerySet | None = None) -> QuerySet:
    """The queue (or ``queryset``) in the order it is sent: high, medium, low; oldest first; never deferred."""
    return claims.in_send_order(queryset)


class _Pass:
    """One pass over the queue: claim a batch, read it, dispatch it, apply the outcomes, record, commit; again.

    Everything that touches the database happens in the calling thread; the
    deliveries themselves may run in the dispatcher's threads
    (``MAILER_SENDER_CONNECTIONS``), their outcomes applied here in the order
    they finish.
    """

    def __init__(
        self,
        queryset: QuerySet | None,
        routes: dict[str | None, Route],
        stop: threading.Event | None = None,
        progress: Callable[[SendResult], None] | None = None,
        on_commit: Callable[[SendResult], None] | None = None,
        wait_for_limits: bool = False,
    ) -> None:
        self.routes = routes
        self.wait_for_limits = wait_for_limits
        self.stop = stop
        self.progress = progress
        self.on_commit = on_commit
        self.using = router.db_for_write(Message)
        self.claim = claims.Claimer(queryset, self.using)
        self.reader = Reader(self.claim)
        self.error_handler = import_string(mailer_settings.ERROR_HANDLER)
        self.throttle = mailer_settings.EMAIL_THROTTLE
        # A throttle means one message at a time, whatever the number of connections.
        connections = 1 if self.throttle else max(1, int(mailer_settings.SENDER_CONNECTIONS))
        self.dispatcher = Dispatcher(connections)
        self.pacer = Pacer(routes, connections)
        self.result = SendResult()
        # The last message (in send order) left queued and not to be claimed again in this pass.
        self.position: claims.Position | None = None
        # Real mailers that did not answer in this pass: their other messages wait for the next one.
        self.down: set[Route] = set()
        # Read once per pass: they are asked about after every message.
        self.batch_size = mailer_settings.COMMIT_BATCH_SIZE
        self.commit_interval = mailer_settings.COMMIT_INTERVAL
        self.add_message_id = mailer_settings.ADD_MESSAGE_ID
        self.limits = PassLimits()
        self.claim_size = self.batch_size

    def run(self) -> SendResult:
        started = time.monotonic()
        try:
            while not self.limits.reached(self.result) and not self.stopping():
                # Rate limits and pauses are settled outside the claim's transaction: no message row stays
                # locked while a relay's row is, nor while the pass waits for a relay.
                size = self.pacer.allowance(1 if self.throttle else self.claim_size)
                if not size:
                    if self.wait_for_limits and not _nap(self.pacer.opens_in(), self.stop):
                        continue
                    self.result.paced_for = self.pacer.opens_in()
                    break
                batch = Batch()
                try:
                    with transaction.atomic(using=self.using):
                        messages = self.claim(size, self.position, self.pacer.mailers())
                        if not messages:
                            if self.pacer.closed:  # what is left may be for a relay at its limit
                                self.result.paced_for = self.pacer.opens_in()
                            break
                        batch.claimed = len(messages)
                        try:
                            self.send(messages, batch)
                        except (KeyboardInterrupt, SystemExit) as stop:
                            # Keep what was sent before the interruption, then stop.
                            batch.error = stop
                        writes.record(batch.logs, batch.log_pks, batch.done, self.using, batch.updates, batch.block)
                finally:
                    self.pacer.settle()
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
            self.dispatcher.close()
            self.result.seconds = time.monotonic() - started
        return self.result

    def send(self, messages: list[Message], batch: Batch) -> None:
        """Read the claimed ``messages`` and hand them to the mailers, up to one per idle slot at a time.

        Stops taking new ones at a poison message, a limit, a stop request or
        the end of the commit interval; deliveries in flight are always
        waited for and recorded.
        """
        to_send, decided = self.reader.read(messages)
        for message, outcome in decided:
            self.apply(message, outcome, batch)
        started = time.monotonic()
        deadline = started + self.commit_interval
        todo = iter(to_send)
        dispatcher = self.dispatcher
        taking = True
        while True:
            while taking and dispatcher.has_idle_slot() and self.limits.room_for(self.result, dispatcher.busy()):
                item = next(todo, None)
                if item is None:
                    taking = False
                    break
                message, readable = item
                route = self.routes.get(message.mailer, self.routes[None])
                email_or_outcome = self.ready(message, readable, route)
                if not isinstance(email_or_outcome, Outcome) and not self.pacer.take(route):
                    email_or_outcome = outcomes.UNTOUCHED  # at its relay's limit: claimed again next batch
                if isinstance(email_or_outcome, Outcome):
                    self.apply(message, email_or_outcome, batch)
                    release(message)
                    continue
                email = email_or_outcome
                if self.add_message_id and get_message_id(email) is None:
                    # Mail is given its Message-ID when queued; this is for rows queued by django-mailer 2.x or
                    # earlier versions of this one. Set here, not left to the backend, so that the log records
                    # the Message-ID that went out.
                    email.extra_headers["Message-ID"] = new_message_id()
                if logger.isEnabledFor(logging.INFO):
                    to = loggable(", ".join(map(str, email.to)))
                    logger.info("sending message '%s' to %s", loggable(email.subject), to)
                dispatcher.start(message, route, email)
            finished = dispatcher.finished()
            if not finished:
                batch.quick = time.monotonic() - started < self.commit_interval / 2
                break
            for delivery in finished:
                if delivery.relay_down:
                    self.relay_is_down(delivery.route, delivery.exception)
                message = delivery.item
                outcome = outcomes.judge(delivery, message, self.error_handler, self.using, stopping=self.stopping())
                dispatcher.release(delivery, outcome.keep)
                self.apply(message, outcome, batch)
                release(message)
                if not outcome.may_go_on or self.limits.reached(self.result) or self.stopping():
                    taking = False
                elif batch.full():
                    taking = False  # commit what the batch holds before reading more big messages
            if taking and time.monotonic() >= deadline:
                taking = False
                batch.stopped_early = next(todo, None) is not None
        if batch.error is None:
            error = self.reader.nothing_decodes(batch.claimed, batch.held)
            if error is not None:
                batch.error = error

    def ready(self, message: Message, readable: Readable, route: Route) -> EmailMessage | Outcome:
        """The email to send now that ``message``'s turn has come, or what becomes of the message instead."""
        if readable is None:  # a big message, not read with the claim
            readable = self.reader.read_big(message)
            if isinstance(readable, Outcome):
                return readable
        if message.expires_at is not None and message.expires_at <= timezone.now():
            # Never sent once expired, whatever else is true of it (read here, or not: its data is logged as is).
            return outcomes.expired(message, readable if isinstance(readable, EmailMessage) else None)
        if isinstance(readable, serialization.NotDecodableHere):
            return outcomes.held(message, readable)  # passed over now that its turn has come
        if route in self.down:
            return outcomes.relay_down()
        return readable

    def apply(self, message: Message, outcome: Outcome, batch: Batch) -> None:
        """Carry out ``outcome`` for ``message``: in the batch's writes, in the counts, in the pass's position."""
        batch.add(message, outcome)
        self.result.add(outcome)
        if outcome.put_aside:
            Message.objects.using(self.using).filter(pk=message.pk).mark_deferred()
            message.priority = PRIORITY_DEFERRED
        if outcome.pass_over:
            self.pass_over(message)
        if outcome.throttled is not None:
            self.pacer.throttle(self.routes.get(message.mailer, self.routes[None]), outcome.throttled)
        if outcome.dealt_with:
            self.report()

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

    def adapt_claim_size(self, batch: Batch) -> None:
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
            self.progress(dataclasses.replace(self.result, seconds=0.0))
        except Exception:
            logger.warning("the progress callback raised; not calling it again in this pass", exc_info=True)
            self.progress = None


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
    wait_for_limits: bool = False,
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
    When every relay with mail is at its ``MAILER_RATE_LIMITS`` or paused, the
    pass ends (``paced_for`` of the result says for how long), or with
    ``wait_for_limits`` waits for the first to open, holding no message row.
    """
    routes_now = routes()  # Refuse a configuration that cannot send before touching anything.
    lock = None
    if mailer_settings.USE_FILE_LOCK:
        acquired, lock = acquire_lock()
        if not acquired:
            return None
    try:
        result = _Pass(queryset, routes_now, stop, progress, on_commit, wait_for_limits).run()
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
            while not Message.objects.due().exists():
                outages = 0
                wait = idle_wait(sleep)
                logger.debug("sleeping for %s seconds before checking queue again", wait)
                if _nap(wait, stop):
                    return
                close_old_connections()
            outages = 0
            started = timezone.now()
            result = send_all(stop=stop, wait_for_limits=True)
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
            # A retry that fell due while the pass ran was not claimed by it: no nap then.
            wait = idle_wait(sleep, since=started)
            if result is not None and result.paced_for is not None:
                wait = min(wait, result.paced_for)  # mail left for a relay at its rate limit
            _nap(wait, stop)


MAX_DATABASE_RETRY_DELAY = 30  # seconds between attempts to reach a database that is down, at most


def _drop_database_connection() -> None:
    """Close the queue's database connection, broken or not: the next query makes a new one."""
    try:
        connections[router.db_for_write(Message)].close()
    except Exception:
        logger.debug("closing a broken database connection raised", exc_info=True)
