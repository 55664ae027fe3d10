"""How fast one sending pass may go to each relay: ``MAILER_RATE_LIMITS`` and the pauses relays ask for.

A :class:`Pacer` is a pass's view of the shared state in :mod:`mailer.ratelimits`. Before each claim,
outside the claim's transaction (no message row is locked while the relay's row is), it reads which
relays are paused and reserves a few tokens for each limited relay, then tells the pass how many
messages to claim and which relays to leave out of the claim. Each message handed to a limited relay
takes one token; tokens a batch did not use serve the next batches while they are fresh (reserved less
than :data:`SLACK` ago), and go back when they are not, or when the pass ends. A relay
that answers "slow down" (:attr:`mailer.failures.Failure.throttled`) is paused for every sender,
with the same backoff as retries (:func:`mailer.ratelimits.pause`).

Reserving a few tokens at a time keeps the time between a token's reservation and the delivery it
pays for short (no more than :data:`RESERVE_AHEAD` seconds' worth of the tightest limit at a time,
and at least one per connection), and reserving against windows :data:`SLACK` longer than the limits
absorbs what that time varies by: the relay sees what the reservations say.

With no limit configured the pacer costs one query a second (the pauses: :data:`PAUSES_EVERY`) and
nothing per message; a relay far from a high limit, one reservation per :data:`RESERVE_BATCHES` batches
at most (:data:`STALE_SHARE`). Tokens that go back while new ones are taken do so in the same
transaction (``reserve(returning=...)``).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Collection, Mapping

from django.utils import timezone

from mailer import claims, ratelimits
from mailer.failures import Failure
from mailer.ratelimits import Grant, Limit
from mailer.routing import Route

logger = logging.getLogger("mailer.engine")

# Tokens are reserved for about this many seconds of the tightest limit at a time (at least one per
# connection): a delivery then reaches the relay within a few milliseconds of its token's time stamp.
RESERVE_AHEAD = 0.05
# Every window is reserved against as this much longer (see mailer.ratewindows.Limit): deliveries that
# reach the relay up to 50 ms later than others, relative to their reservations, still keep the limit
# there. It costs a limit per second 5% of its rate, and longer windows next to nothing.
SLACK = 0.05
# A relay whose limit is high enough to reserve more than a token per connection at a time: tokens still
# fresh (reserved less than SLACK ago) serve its next batches too, up to this many batches' worth per
# reservation, so that a relay far from its limit costs one reservation per few batches. A relay with a
# low limit gets fresh tokens for each batch: a token kept across batches would reach the relay later.
RESERVE_BATCHES = 8
# Tokens older than SLACK may still be used while a sender holds no more than this share of a second's
# worth of the relay's tightest limit: delivered late, they can add at most that many deliveries to a
# window at the relay (1% of a per-second limit per sender). A sender reserves that many at a time, so
# that one far from a high limit ("100000/s") reserves once per so many messages, not every SLACK.
STALE_SHARE = 0.01
# Pauses that other senders recorded are read at most this often (seconds): a pause lasts at least
# MAILER_RETRY_DELAY, and a sender that meets the relay's "slow down" itself pauses at once anyway.
PAUSES_EVERY = 1.0


class Pacer:
    """The rate limits and pauses of one pass over ``routes`` (alias -> route, as the pass has them)."""

    def __init__(self, routes: Mapping[str | None, Route], connections: int) -> None:
        self.routes = routes
        self.relay_of = {route: ratelimits.relay_of(route) for route in set(routes.values())}
        self.limits = {relay: ratelimits.limits_for(relay) for relay in set(self.relay_of.values())}
        self.chunk = {relay: _chunk(limits, connections) for relay, limits in self.limits.items() if limits}
        self.carry = {relay: _carry(self.limits[relay]) for relay, chunk in self.chunk.items() if chunk > connections}
        self.connections = connections
        self.tokens: dict[str, int] = {}
        self.grants: dict[str, Grant] = {}
        self.reserved_at: dict[str, float] = {}  # time.monotonic() when each relay's tokens were reserved
        self.refreshed: set[str] = set()  # relays whose tokens were too old once in this pass
        self.closed: dict[str, datetime.datetime] = {}  # relay -> when it may be sent to again
        self.paused: dict[str, datetime.datetime] = {}  # relay -> end of its pause, as last read or recorded
        self.paused_read = -math.inf  # time.monotonic() of the last read
        self.throttled: dict[str, Failure] = {}  # pauses to record once the batch has committed

    def allowance(self, wanted: int) -> int:
        """How many messages the next claim may take (0: every relay is closed for now); call between batches."""
        now, clock = timezone.now(), time.monotonic()
        if clock - self.paused_read >= PAUSES_EVERY:
            self.paused = {relay: until for relay, until in ratelimits.pauses(now).items() if relay in self.limits}
            self.paused_read = clock
        self.closed = {relay: until for relay, until in self.paused.items() if until > now}
        for relay, chunk in self.chunk.items():
            if relay in self.closed:
                continue
            held, grant = self.tokens.pop(relay, 0), self.grants.pop(relay, None)
            if held and self._may_carry(relay, held, clock):
                self.tokens[relay] = held
                if grant is not None:
                    self.grants[relay] = grant
                continue
            # Tokens too old to keep the limit at the relay, or too few to carry, go back as new ones are taken.
            returning = (grant, held) if grant is not None and held else None
            grant = ratelimits.reserve(
                relay,
                min(chunk, max(wanted * RESERVE_BATCHES, self.carry.get(relay, 0))),
                limits=self.limits[relay],
                slack=SLACK,
                returning=returning,
            )
            self.reserved_at[relay] = time.monotonic()
            self.tokens[relay] = grant.granted
            if grant.reservation is not None:
                self.grants[relay] = grant
            if not grant.granted:
                self.closed[relay] = grant.retry_at or now
        open_relays = set(self.limits) - set(self.closed)
        if not open_relays:
            return 0
        if any(relay not in self.chunk for relay in open_relays):
            return wanted  # a relay without limits: claim as usual
        return min(wanted, sum(self.tokens[relay] for relay in open_relays))

    def _may_carry(self, relay: str, held: int, clock: float) -> bool:
        """May ``held`` tokens of ``relay`` serve the next batch: fresh, or too few to matter when late?"""
        if relay not in self.carry:
            return False  # as few tokens as connections: fresh ones for each batch
        return clock - self.reserved_at[relay] <= SLACK or held <= self.carry[relay]

    def mailers(self) -> claims.Mailers | None:
        """Which messages the next claim may take: not those of closed relays (``None``: all)."""
        return claimable(self.routes, self.closed)

    def take(self, route: Route) -> bool:
        """May a message go to ``route`` now? Takes one of its tokens if it has limits."""
        relay = self.relay_of[route]
        if relay in self.closed:
            return False
        if relay not in self.chunk:
            return True
        if not self.tokens.get(relay):
            return False
        self.tokens[relay] -= 1
        return True

    def deadline(self, route: Route) -> float | None:
        """The ``time.monotonic()`` after which a message to ``route`` must not go with the token it took.

        A token is stamped when it is reserved; sent much later, it would fall in the relay's next window.
        That happens when a pass starts (the claim's SQL is built, the backend imported, the connection
        opened between the reservation and the delivery), so a relay gets fresh tokens once per pass when
        its delivery comes more than :data:`SLACK` after its reservation; after that, never again, so
        that a slow database or relay cannot keep the pass from sending.
        """
        relay = self.relay_of[route]
        if relay not in self.chunk or relay in self.refreshed or self.tokens.get(relay, 0) < self.carry.get(relay, 0):
            return None
        return self.reserved_at[relay] + SLACK

    def late(self, route: Route) -> None:
        """A delivery to ``route`` did not start before its :meth:`deadline`: its token goes back, and the
        relay takes nothing more in this batch."""
        relay = self.relay_of[route]
        self.tokens[relay] = self.tokens.get(relay, 0) + 1
        self.refreshed.add(relay)
        self.closed.setdefault(relay, timezone.now())  # its other tokens are as old: fresh ones next batch

    def throttle(self, route: Route, failure: Failure) -> None:
        """``route``'s relay asked to slow down: send it nothing more in this batch, pause it after the commit."""
        relay = self.relay_of[route]
        self.closed[relay] = timezone.now()
        self.throttled.setdefault(relay, failure)

    def settle(self) -> None:
        """After a batch has committed: record the pauses it met. Fresh tokens are kept for the next batch."""
        for relay, failure in self.throttled.items():
            until = ratelimits.pause(relay, failure.retry_after)
            self.closed[relay] = self.paused[relay] = until
            logger.warning("%s asked to slow down (%s): paused until %s", relay, failure.reason, until.isoformat())
        self.throttled = {}

    def give_back(self, relay: str) -> None:
        """Return the tokens ``relay`` holds and did not use."""
        grant, unused = self.grants.pop(relay, None), self.tokens.pop(relay, 0)
        if grant is not None and unused:
            ratelimits.give_back(grant, unused)

    def close(self) -> None:
        """At the end of the pass: every token not used goes back."""
        for relay in list(self.tokens):
            self.give_back(relay)

    def opens_in(self) -> float:
        """Seconds until the first closed relay may be sent to again (0 if none is closed)."""
        if not self.closed:
            return 0.0
        return max(0.0, (min(self.closed.values()) - timezone.now()).total_seconds())


def claimable(routes: Mapping[str | None, Route], closed: Collection[str]) -> claims.Mailers | None:
    """Which messages (by their ``mailer`` alias, routed by ``routes``) go to none of the ``closed`` relays
    (``None``: all of them)."""
    shut = {route for route in set(routes.values()) if ratelimits.relay_of(route) in closed}
    if not shut:
        return None
    aliases = {alias: route for alias, route in routes.items() if alias is not None}
    if routes[None] in shut:  # messages of every alias not listed go to the default mailer
        return "only", frozenset(alias for alias, route in aliases.items() if route not in shut)
    return "except", frozenset(alias for alias, route in aliases.items() if route in shut)


def _carry(limits: list[Limit]) -> int:
    """How many tokens of a relay with ``limits`` a sender may hold past :data:`SLACK` (see :data:`STALE_SHARE`)."""
    return math.floor(min(limit.count / limit.seconds for limit in limits) * STALE_SHARE)


def _chunk(limits: list[Limit], connections: int) -> int:
    """Tokens to reserve at a time for a relay with ``limits``."""
    per_second = min(limit.count / limit.seconds for limit in limits)
    return max(connections, math.ceil(per_second * RESERVE_AHEAD))
