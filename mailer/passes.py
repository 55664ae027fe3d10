"""One sending pass: claim a batch, read it, dispatch it, apply the outcomes, record, commit; again.

:func:`mailer.engine.send_all` runs one :class:`Pass` under the file lock. Nothing here is specific to a
database (:mod:`mailer.claims` holds that), to a backend (:mod:`mailer.dispatch`) or to the error policy
(:mod:`mailer.outcomes`); the pass applies what they return.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from django.core.mail import EmailMessage
from django.db import router, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from mailer import claims, notify, outcomes, serialization, staging, storage, writes
from mailer.conf import mailer_settings
from mailer.dispatch import Dispatcher
from mailer.leases import Leases
from mailer.limits import PassLimits
from mailer.logtext import PER_MESSAGE, loggable
from mailer.message_ids import get_message_id, new_message_id
from mailer.models import PRIORITY_DEFERRED, Message
from mailer.outcomes import Batch, Outcome
from mailer.pacing import Pacer
from mailer.reading import Readable, Reader, release
from mailer.routing import Route
from mailer.summaries import MessageReport, SendResult
from mailer.wakeups import nap

logger = logging.getLogger("mailer.engine")  # what these messages have always been logged on


class Pass:
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
        on_message: Callable[[MessageReport], None] | None = None,
    ) -> None:
        # MAILER_REDIRECT_TO (None: off), checked (ImproperlyConfigured) before anything is set up, once per pass;
        # the emails redirected, by queued row.
        self.redirect_to = staging.redirect_to()
        self.redirected: dict[int, staging.Redirect] = {}
        self.routes = routes
        self.on_message = on_message
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
        self.connections = connections
        # Deliveries go on across commits (mailer.leases) with several connections, but not under rate limits:
        # their tokens are settled batch by batch.
        # Opt-in (MAILER_LEASE_DELIVERIES): see docs/guarantees.rst for what a lease changes after a crash.
        self.pipelined = connections > 1 and not self.pacer.chunk and mailer_settings.LEASE_DELIVERIES is True
        self.leases = Leases(self.using)
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
        # Files in MAILER_STORAGE of the messages this batch removes from the queue: deleted after the commit
        # unless a log row keeps referring to them (mailer.storage.release).
        self.stored_files: list[tuple[str, object]] = []
        # The mailer.signals of the batch in hand; None when no signal has a receiver (then nothing is built).
        self.events: notify.Events | None = None

    def run(self) -> SendResult:
        started = time.monotonic()
        try:
            while True:
                busy = self.dispatcher.busy()  # deliveries started in the last batch, still going on (leased)
                ending = self.limits.reached(self.result) or self.stopping()
                if ending and not busy:
                    break
                # Rate limits and pauses are settled outside the claim's transaction: no message row stays
                # locked while a relay's row is, nor while the pass waits for a relay.
                wanted = 1 if self.throttle else self.claim_size
                # What one transaction hands to the mailers stays within MAILER_COMMIT_BATCH_SIZE, leases included.
                size = 0 if ending else min(self.pacer.allowance(wanted), self.batch_size - busy)
                if size <= 0 and not busy:
                    if self.wait_for_limits and not nap(self.pacer.opens_in(), self.stop):
                        continue
                    self.result.paced_for = self.pacer.opens_in()
                    break
                batch = Batch()
                self.events = notify.Events.if_listened()
                try:
                    with transaction.atomic(using=self.using):
                        messages = self.claim(size, self.position, self.pacer.mailers()) if size > 0 else []
                        if not messages and not busy:
                            if self.pacer.closed:  # what is left may be for a relay at its limit
                                self.result.paced_for = self.pacer.opens_in()
                            break
                        batch.claimed = len(messages)
                        batch.more = size > 0 and len(messages) == size  # the queue may hold more: go on
                        try:
                            self.send(messages, batch)
                        except (KeyboardInterrupt, SystemExit) as stop:
                            # Keep what was sent before the interruption, then stop.
                            batch.error = stop
                        if batch.error is not None:
                            self.leases.give_back(batch)  # deliveries not collected: their messages are due again
                        writes.record(batch.logs, batch.log_pks, batch.done, self.using, batch.updates, batch.block)
                        storage.release(self.stored_files, self.using)
                        if self.events is not None:
                            self.events.send_on_commit(self.using)  # after the commit; never if it rolls back
                finally:
                    self.stored_files = []
                    self.pacer.settle()
                # Committed: only now do this batch's outcomes count for those who were told about commits.
                if self.on_commit is not None:
                    self.on_commit(dataclasses.replace(self.result, seconds=0.0))
                self.adapt_claim_size(batch)
                if batch.error is not None:
                    raise batch.error
                if self.throttle:
                    logger.debug("Throttling email delivery. Sleeping %s seconds", self.throttle)
                    nap(self.throttle, self.stop)
        finally:
            self.dispatcher.close()
            self.pacer.close()
            self.forget_redirects()
            self.result.seconds = time.monotonic() - started
        return self.result

    def send(self, messages: list[Message], batch: Batch) -> None:
        """Read the claimed ``messages`` and hand them to the mailers, up to one per idle slot at a time.

        Stops taking new ones at a poison message, a limit, a stop request or
        the end of the commit interval; deliveries in flight are waited for
        and recorded, or, when the pass goes on with several connections,
        leased (:mod:`mailer.leases`) and recorded by a later batch.
        """
        to_send, decided = self.reader.read(messages) if messages else ([], [])
        if self.leases:  # made due again while its delivery goes on (the admin's "retry now"): left alone
            to_send = [item for item in to_send if item[0].pk not in self.leases]
            decided = [item for item in decided if item[0].pk not in self.leases]
        for message, outcome in decided:
            self.apply(message, outcome, batch)
        started = time.monotonic()
        deadline = started + self.commit_interval
        todo = iter(to_send)
        dispatcher, limits = self.dispatcher, self.limits
        taking, exhausted = True, False
        while True:
            # (Spelled out, not dispatcher.has_idle_slot() and limits.room_for(): this loop runs once per message.)
            while (
                taking
                and dispatcher.idle
                and (limits.max_batch is None or limits.room_for(self.result, dispatcher.busy()))
            ):
                item = next(todo, None)
                if item is None:
                    taking, exhausted = False, True
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
                if self.redirect_to is not None:  # the one place an email is readied for the backend
                    self.redirected[message.pk] = staging.redirect(email, self.redirect_to)
                if logger.isEnabledFor(logging.INFO):
                    to = loggable(", ".join(map(str, email.to)))
                    logger.info("sending message '%s' to %s", loggable(email.subject), to, extra=PER_MESSAGE)
                dispatcher.start(message, route, email, self.pacer.deadline(route))
            if not taking and (exhausted or batch.stopped_early) and self.carries_on(batch):
                # Commit now, the deliveries in flight leased: the next claim keeps every connection busy.
                batch.quick = time.monotonic() - started < self.commit_interval / 2
                self.leases.take(dispatcher.in_flight_items())
                break
            finished = dispatcher.finished()
            if not finished:
                batch.quick = time.monotonic() - started < self.commit_interval / 2
                break
            for delivery in finished:
                redirect = self.redirected.pop(delivery.item.pk, None)
                if redirect is not None:  # put back as it was queued, for the log and the error handler
                    delivery.refusals = redirect.undo(delivery.refusals)
                if delivery.too_late:  # its token is too old to keep the limit at the relay: next batch
                    self.pacer.late(delivery.route)
                    dispatcher.release(delivery, delivery.connection)
                    self.apply(delivery.item, outcomes.UNTOUCHED, batch)
                    release(delivery.item)
                    if redirect is not None:
                        redirect.forget()
                    continue
                if delivery.relay_down:
                    self.relay_is_down(delivery.route, delivery.exception)
                message = delivery.item
                outcome = outcomes.judge(delivery, message, self.error_handler, self.using, stopping=self.stopping())
                if redirect is not None:
                    outcome = redirect.judged(outcome)
                dispatcher.release(delivery, outcome.keep)
                self.apply(message, outcome, batch, delivery.email)
                release(message)
                if redirect is not None:
                    redirect.forget()  # its log rows are made
                if not outcome.may_go_on or self.limits.reached(self.result) or self.stopping():
                    taking = False
                elif batch.full():
                    taking = False  # commit what the batch holds before reading more big messages
            if taking and time.monotonic() >= deadline:
                taking = False
                batch.stopped_early = next(todo, None) is not None
                exhausted = not batch.stopped_early
        if batch.error is None:
            error = self.reader.nothing_decodes(batch.claimed, batch.held)
            if error is not None:
                batch.error = error

    def carries_on(self, batch: Batch) -> bool:
        """May the batch commit with deliveries in flight (leased), the queue likely holding more to claim?"""
        return (
            self.pipelined
            and (batch.more or batch.stopped_early)
            and batch.error is None
            and self.dispatcher.busy() > 0
            and not self.stopping()
            and not self.limits.reached(self.result)
        )

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
        if getattr(message, "stored_attachments", None):
            try:
                storage.load(readable)  # attachments kept in MAILER_STORAGE: read now, let go by release()
            except storage.AttachmentUnavailable as exc:
                return outcomes.held(message, exc)
        return readable

    def apply(self, message: Message, outcome: Outcome, batch: Batch, email: EmailMessage | None = None) -> None:
        """Carry out ``outcome`` for ``message``: in the batch's writes, in the counts, in the pass's position.

        ``email``, when the caller has it, is what ``on_message`` reports on (else the message is read again).
        """
        batch.add(message, outcome)
        if message.pk in self.leases:
            self.leases.settle(message.pk, outcome, batch)
        self.result.add(outcome)
        if self.events is not None:
            self.events.outcome(message, outcome, email)
        if self.on_message is not None and outcome.counts is not None:
            self.tell(outcome, email if email is not None else message.email)
        if outcome.remove and getattr(message, "stored_attachments", None):
            self.stored_files.extend((reference.token, message.when_added) for reference in message.stored_attachments)
        if outcome.put_aside:
            Message.objects.using(self.using).filter(pk=message.pk).mark_deferred()
            message.priority = PRIORITY_DEFERRED
        if outcome.pass_over:
            self.pass_over(message)
        if outcome.throttled is not None:
            self.pacer.throttle(self.routes.get(message.mailer, self.routes[None]), outcome.throttled)
        if self.progress is not None and outcome.dealt_with:
            self.report()

    def forget_redirects(self) -> None:
        for redirect in self.redirected.values():
            redirect.forget()
        self.redirected.clear()

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
        # Pipelined, a claim fills every connection at least (the leased deliveries count in the batch size).
        least = self.connections if self.pipelined else 1
        if batch.stopped_early:
            self.claim_size = max(least, min(maximum, len(batch.done)))
        elif batch.quick:
            self.claim_size = min(maximum, 2 * self.claim_size)

    def relay_is_down(self, route: Route, exc: Exception | None) -> None:
        if route not in self.down:
            self.down.add(route)
            text = "%s did not answer (%s); its other messages wait for the next pass"
            logger.warning(text, route, exc or "no reply", extra=PER_MESSAGE)

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def tell(self, outcome: Outcome, email: EmailMessage | None) -> None:
        """Hand what became of one message to the ``on_message`` callback; it can't break the pass."""
        try:
            self.on_message(MessageReport.of(outcome, email))
        except Exception:
            logger.warning("the on_message callback raised; not calling it again in this pass", exc_info=True)
            self.on_message = None

    def report(self) -> None:
        """Hand a copy of the counts so far to the ``progress`` callback, if any; it can't break the pass."""
        if self.progress is None:
            return
        try:
            self.progress(dataclasses.replace(self.result, seconds=0.0))
        except Exception:
            logger.warning("the progress callback raised; not calling it again in this pass", exc_info=True)
            self.progress = None
