"""Hand emails to the mailers that really send them, over connections kept open, one or several at a time.

A :class:`Dispatcher` owns a few *slots*. A slot holds at most one open
connection per :class:`~mailer.routing.Route`, and makes one delivery at a
time; its connections are reused for every delivery it makes until the
dispatcher is closed. With more than one slot, deliveries run in worker
threads, one per slot, and the caller collects them as they finish; with
one, each delivery runs in the calling thread.

The dispatcher knows nothing of the queue: it takes an email and a route,
and hands back a :class:`Delivery` saying how it went. The caller decides
what that means for the message (:mod:`mailer.outcomes`) and which
connection the slot keeps (:meth:`Dispatcher.release`).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from mailer import smtp
from mailer.routing import Route

logger = logging.getLogger("mailer.engine")

Slot = dict[Route, BaseEmailBackend]  # the open connections of one slot


@dataclass(eq=False)
class Delivery:
    """How one delivery went, handed from the slot that made it back to the caller."""

    item: Any  # what the caller handed in with the email (the sender: its queued message)
    email: EmailMessage
    route: Route
    slot: Slot
    exception: Exception | None = None
    refusals: list[smtp.Refusal] = field(default_factory=list)  # recipients the relay refused (SMTP backends)
    relay_down: bool = False  # no connection could be made, or the relay did not answer in time
    # A time.monotonic() after which the email must not be sent any more (None: whenever); ``too_late``
    # says that the connection was ready only after it, and nothing was sent.
    not_after: float | None = None
    too_late: bool = False

    @property
    def connection(self) -> BaseEmailBackend | None:
        """The slot's connection to the route: the one the email went over, if it was opened."""
        return self.slot.get(self.route)


class Dispatcher:
    """Deliveries over ``size`` slots; threads only when ``size`` > 1. Use from one thread, then :meth:`close`."""

    def __init__(self, size: int) -> None:
        self.idle: list[Slot] = [{} for _ in range(size)]
        self.slots = list(self.idle)
        self.executor = ThreadPoolExecutor(size, thread_name_prefix="mailer-send") if size > 1 else None
        self.in_flight: dict[Future, Delivery] = {}
        self.done: list[Delivery] = []  # deliveries made in the calling thread, not collected yet

    def in_flight_items(self) -> list[Any]:
        """What the caller handed in with each delivery started and not collected."""
        return [delivery.item for delivery in (*self.in_flight.values(), *self.done)]

    def has_idle_slot(self) -> bool:
        return bool(self.idle)

    def busy(self) -> int:
        """How many deliveries are started and not collected."""
        return len(self.in_flight) + len(self.done)

    def start(self, item: Any, route: Route, email: EmailMessage, not_after: float | None = None) -> None:
        """Hand ``email`` to ``route`` in an idle slot (see :meth:`has_idle_slot`), unless its connection is
        ready only after ``not_after`` (a ``time.monotonic()``)."""
        delivery = Delivery(item, email, route, self.idle.pop(), not_after=not_after)
        if self.executor is None:
            self.done.append(_deliver(delivery))
        else:
            self.in_flight[self.executor.submit(_deliver, delivery)] = delivery

    def finished(self) -> list[Delivery]:
        """The deliveries started that have finished: at least one, waiting for it if need be; [] if none is busy."""
        done, self.done = self.done, []
        if self.in_flight:
            futures, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
            done.extend(self.in_flight.pop(future) for future in futures)
        return done

    def release(self, delivery: Delivery, keep: BaseEmailBackend | None) -> None:
        """Give the delivery's slot back, with ``keep`` as its connection to the route (``None``: close it)."""
        current = delivery.slot.get(delivery.route)
        if keep is not current:
            _close(delivery.slot, delivery.route)
            if keep is not None:
                delivery.slot[delivery.route] = keep
        self.idle.append(delivery.slot)

    def close(self) -> None:
        """Wait for the deliveries in flight, then close every connection."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        for slot in self.slots:
            for route in list(slot):
                _close(slot, route)


def _deliver(delivery: Delivery) -> Delivery:
    """Send the delivery's email over its slot's connection (opened on first use); never raises.

    Runs in a worker thread when there is more than one slot: it touches no database.
    """
    slot, route = delivery.slot, delivery.route
    connection = slot.get(route)
    if connection is None:
        try:
            connection = slot[route] = route.open()
        except Exception as exc:
            # Refused, reset, timed out or hung up while connecting: the relay is down, not the message.
            delivery.exception, delivery.relay_down = exc, isinstance(exc, OSError)
            return delivery
    if delivery.not_after is not None and time.monotonic() > delivery.not_after:
        delivery.too_late = True
        return delivery
    relay = smtp.is_smtp(connection)
    try:
        if relay:
            with smtp.capturing() as capture:
                connection.send_messages([delivery.email])
            delivery.refusals = capture.refusals
        else:  # only Django's SMTP backend reports refused recipients (see mailer.smtp)
            connection.send_messages([delivery.email])
    except Exception as exc:
        # An SMTP relay that stopped answering mid-session; other backends may time out per message.
        delivery.exception = exc
        delivery.relay_down = relay and isinstance(exc, TimeoutError)
    return delivery


def _close(slot: Slot, route: Route) -> None:
    connection = slot.pop(route, None)
    if connection is not None:
        try:
            connection.close()
        except Exception:
            logger.debug("closing a failed connection raised", exc_info=True)
