"""The database side of :mod:`mailer.ratelimits`: a relay's lock row, its running window sums, its log.

Every function here runs inside the transaction that holds the relay's :class:`RelayState` row lock,
except :func:`create_state` and :func:`purge_now_and_then`.

Summing a day's reservations on every call would cost time in proportion to the rows of the day (35 ms for
20,000 rows on MariaDB, while the relay is locked). So the lock row keeps, per window length ``T``
(:attr:`Limit.span`, in microseconds), the tokens reserved after an *edge* time, ``{"T": [tokens, edge]}`` in
``RelayState.windows`` (edge in microseconds since the epoch). A call moves each edge up to ``stamp - T`` and
subtracts only the rows it passes: a few rows, whatever the window's length. After a pause longer than
:data:`REBUILD_AFTER`, or for a window length seen for the first time, the sum is taken afresh from the log
(the purge may have deleted rows the edge would pass).

Reservations are stamped in order: ``stamp = max(now, RelayState.last_at)``. A host whose clock is behind
stamps its rows at the latest stamp so far, so the rows a window holds are those after its start, and the
running sums count exactly the window that ends at the stamp.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import IntegrityError, connections, transaction
from django.db.models import Sum

from mailer.durability import COMMIT_WITHOUT_WAITING_FOR_DISK
from mailer.models import RateReservation, RelayState

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MICROSECOND = datetime.timedelta(microseconds=1)
# A window whose edge would move further than this is summed afresh (see the module's docstring).
REBUILD_AFTER = datetime.timedelta(seconds=30)
# Rows of a relay older than its longest window are purged at most this often per process...
PURGE_INTERVAL = datetime.timedelta(minutes=1)
# ...and only once this much older than the window: clocks that differ by less never purge a row that a
# running sum is still to pass (REBUILD_AFTER is shorter).
PURGE_MARGIN = datetime.timedelta(minutes=1)
# How many reservations retry_at reads at a time, oldest first, to find when tokens free up.
WALK_CHUNK = 100


UNITS = {"s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60}


@dataclass(frozen=True)
class Limit:
    """At most ``count`` tokens in any window of ``seconds`` seconds (``mailer.ratelimits.Limit``).

    ``slack``: seconds added to the window when reserving, so that deliveries that reach the relay a
    little later than their reservation (up to ``slack`` seconds later than others) still keep the limit
    there; :mod:`mailer.pacing` sets it. The running sums are kept per :attr:`span`.
    """

    count: int
    seconds: int
    slack: float = 0.0

    @property
    def span(self) -> int:
        """The window reserved against, in microseconds: ``seconds`` and the slack."""
        return round((self.seconds + self.slack) * 1_000_000)

    def __str__(self) -> str:
        unit = next(name for name, length in UNITS.items() if length == self.seconds)
        return f"{self.count}/{unit}"


def micros(at: datetime.datetime) -> int:
    return (at - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime.datetime:
    return EPOCH + value * MICROSECOND


def lock(relay: str, using: str) -> RelayState | None:
    """The relay's row, locked until the transaction ends; ``None`` if the relay has none yet.

    PostgreSQL and MariaDB/MySQL: ``SELECT ... FOR UPDATE`` (on PostgreSQL, the transaction's commit does not
    wait for the disk: :mod:`mailer.durability`). SQLite has no row locks, and a transaction
    that reads first and writes later fails at once (not after the busy timeout) when another process
    wrote meanwhile; an UPDATE as the first statement takes SQLite's write lock up front, so other
    processes wait for it as for any write.
    """
    states = RelayState.objects.using(using).filter(relay=relay)
    if connections[using].vendor == "postgresql":
        states = states.annotate(commit_without_waiting_for_disk=COMMIT_WITHOUT_WAITING_FOR_DISK)
    if connections[using].features.has_select_for_update:
        return states.select_for_update().first()
    return states.first() if states.update(relay=relay) else None


def create_state(relay: str, using: str) -> None:
    """Create the relay's row, in a transaction of its own, unless another process just did.

    Not inside the transaction that then locks it: on MariaDB/MySQL, processes that failed to insert the
    same key keep a shared lock on it, and two of them asking for the row lock deadlock.
    """
    try:
        with transaction.atomic(using=using):
            RelayState.objects.using(using).create(relay=relay)
    except IntegrityError:
        pass  # created by another process meanwhile


def stamp(state: RelayState, now: datetime.datetime) -> datetime.datetime:
    """The time to stamp a reservation with: ``now``, or the relay's latest stamp if that is later."""
    return now if state.last_at is None or now > state.last_at else state.last_at


def current_sums(state: RelayState, limits: Sequence[Limit], at: datetime.datetime, using: str) -> dict[int, int]:
    """Tokens in each window ending at ``at`` (by :attr:`Limit.span`); moves ``state.windows`` up to ``at``.

    The caller saves ``state``. Windows of lengths no limit has any more are dropped.
    """
    rows = RateReservation.objects.using(using).filter(relay=state.relay)
    kept = state.windows or {}
    windows: dict[str, list[int]] = {}
    for span in sorted({limit.span for limit in limits}):
        edge = micros(at) - span
        entry = kept.get(str(span))
        if entry is None or edge - entry[1] > REBUILD_AFTER // MICROSECOND:
            entry = [_sum(rows.filter(at__gt=from_micros(edge))), edge]
        elif edge > entry[1]:
            left = _sum(rows.filter(at__gt=from_micros(entry[1]), at__lte=from_micros(edge)))
            entry = [entry[0] - left, edge]
        windows[str(span)] = entry
    state.windows = windows
    return {int(span): tokens for span, (tokens, _) in windows.items()}


def add(state: RelayState, at: datetime.datetime, tokens: int) -> None:
    """Count ``tokens`` reserved (negative: given back) at ``at`` in every window that holds ``at``."""
    for entry in (state.windows or {}).values():
        if micros(at) > entry[1]:
            entry[0] = max(0, entry[0] + tokens)


def _sum(rows) -> int:
    return rows.aggregate(tokens=Sum("count"))["tokens"] or 0


def retry_at(
    state: RelayState, limits: Sequence[Limit], used: Mapping[int, int], at: datetime.datetime, using: str
) -> datetime.datetime:
    """The earliest time at which every limit has room for one more token, if nobody reserves meanwhile.

    ``used``: the tokens in each window ending at ``at`` (by :attr:`Limit.span`). A limit with ``used`` tokens in its
    window has room once ``used - (N - 1)`` of them left it; a reservation stamped ``s`` leaves the window
    of ``T`` seconds at ``s + T`` exactly (windows are ``(t - T, t]``). The answer is the latest of these
    times over the limits that are full: walk each full window's rows oldest first, a few at a time.
    """
    found = at
    for limit in limits:
        excess = used[limit.span] - (limit.count - 1)
        if excess <= 0:
            continue
        window = datetime.timedelta(microseconds=limit.span)
        rows = (
            RateReservation.objects.using(using)
            .filter(relay=state.relay, at__gt=at - window)
            .order_by("at", "pk")
            .values_list("at", "count")
        )
        start = 0
        while excess > 0:
            chunk = list(rows[start : start + WALK_CHUNK])
            if not chunk:  # the running sums count rows the log no longer has (deleted by hand): rebuild them
                state.windows = {}
                return at
            for row_at, count in chunk:
                excess -= count
                if excess <= 0:
                    found = max(found, row_at + window)
                    break
            start += WALK_CHUNK
    return found


_last_purge: dict[tuple[str, str], datetime.datetime] = {}


def purge_now_and_then(relay: str, limits: Sequence[Limit], now: datetime.datetime, using: str) -> None:
    """Delete the relay's rows older than its longest window (and a margin), once a minute per process."""
    last = _last_purge.get((relay, using))
    if last is not None and last <= now < last + PURGE_INTERVAL:
        return
    _last_purge[relay, using] = now
    oldest = now - datetime.timedelta(seconds=max(limit.seconds for limit in limits)) - PURGE_MARGIN
    RateReservation.objects.using(using).filter(relay=relay, at__lte=oldest).delete()
