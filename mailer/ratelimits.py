"""Rate limits per relay (``MAILER_RATE_LIMITS``), shared by every sender process on every host.

The shared state is a reservation log in the database: before handing mail to a relay, a sender
:func:`reserve` s tokens, which writes one :class:`~mailer.models.RateReservation` row (relay, when,
how many). A reservation is decided while holding the relay's :class:`~mailer.models.RelayState` row
lock, so reservations of one relay are decided one at a time, whichever process or host makes them,
and each one sees every earlier one. A grant is the largest number that keeps every window of every
limit at or under its N, counting every reservation made after the window's start, so the guarantee

    no sliding window of T seconds (any start, not calendar-aligned) holds more than N reserved tokens

holds on the timestamps the reservations carry. Those are read from ``timezone.now()`` of the reserving
process: across hosts the limit is as exact as their clocks agree (NTP keeps them within milliseconds).
A row stamped in another process's future (a clock ahead, a controlled clock) still counts, so a host
whose clock is behind never reserves past a limit by not seeing it.

Tokens taken and not used (a sender reserved for a batch and sent fewer) go back with :func:`give_back`,
which shrinks the sender's own row, so that the window is not wasted.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from mailer import routing
from mailer.conf import mailer_settings
from mailer.models import RateReservation, RelayState

UNITS = {"s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60}
LIMIT_FORMAT = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
# Rows of a relay older than its longest window are purged by reserve() at most this often per process...
PURGE_INTERVAL = datetime.timedelta(minutes=1)
# ...and only once this much older than the window: a host whose clock is behind still counts rows that a
# host whose clock is ahead would already call old.
PURGE_MARGIN = datetime.timedelta(minutes=1)
# How many reservations retry_at reads at a time, oldest first, to find when tokens free up.
WALK_CHUNK = 100


class LimitError(ValueError):
    """``MAILER_RATE_LIMITS`` is malformed; the message names the entry."""


@dataclass(frozen=True)
class Limit:
    """At most ``count`` tokens in any window of ``seconds`` seconds."""

    count: int
    seconds: int

    def __str__(self) -> str:
        unit = next(name for name, length in UNITS.items() if length == self.seconds)
        return f"{self.count}/{unit}"


@dataclass(frozen=True)
class Grant:
    """What :func:`reserve` granted: ``granted`` tokens (deliveries) to ``relay``, taken at ``at``.

    ``retry_at``: when fewer were granted than wanted, the earliest time at which :func:`reserve` would
    grant at least one more (if nobody else reserves meanwhile); otherwise ``None``. ``reservation``: the
    id of the row that holds the tokens, for :func:`give_back` (``None``: nothing was written, because
    nothing was granted or the relay has no limit).
    """

    relay: str
    granted: int
    at: datetime.datetime
    retry_at: datetime.datetime | None = None
    reservation: int | None = None


# --- The setting ----------------------------------------------------------------------------------------


def parse_limit(text: Any) -> Limit:
    """``"14/s"`` -> ``Limit(14, 1)``. Raises :class:`LimitError` saying what is wrong."""
    if not isinstance(text, str):
        raise LimitError(f"{text!r} is not a string like '14/s'")
    match = LIMIT_FORMAT.match(text)
    if not match:
        raise LimitError(f"{text!r} is not of the form 'N/s', 'N/m', 'N/h' or 'N/d'")
    count, unit = int(match[1]), match[2]
    if unit not in UNITS:
        raise LimitError(f"{text!r} has the unknown unit {unit!r}; use s, m, h or d")
    if count < 1:
        raise LimitError(f"{text!r} allows nothing; N must be 1 or more (remove the relay's entry for no limit)")
    return Limit(count, UNITS[unit])


def parse_limits(setting: Any, relays: Iterable[str] | None = None) -> dict[str, list[Limit]]:
    """The limits of ``MAILER_RATE_LIMITS``, by relay; raises :class:`LimitError` naming the bad entry.

    ``relays``: the relay names a key may be (default: :func:`known_relays`).
    """
    if not isinstance(setting, Mapping):
        raise LimitError(f"MAILER_RATE_LIMITS is {setting!r}; it must be a dict of relay name to a list of limits")
    known = set(known_relays() if relays is None else relays)
    parsed: dict[str, list[Limit]] = {}
    for relay, texts in setting.items():
        entry = f"MAILER_RATE_LIMITS[{relay!r}]"
        if relay not in known:
            names = ", ".join(repr(name) for name in sorted(known)) or "none"
            raise LimitError(f"{entry}: {relay!r} is not a relay that delivers mail (those are: {names})")
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise LimitError(f"{entry} is {texts!r}; it must be a list of limits such as ['14/s', '50000/d']")
        limits = []
        for text in texts:
            try:
                limits.append(parse_limit(text))
            except LimitError as exc:
                raise LimitError(f"{entry}: {exc}") from None
        parsed[relay] = limits
    return parsed


def relay_of(route: routing.Route) -> str:
    """The relay name of a route: its ``MAILERS`` alias, or ``"default"`` for ``MAILER_EMAIL_BACKEND``."""
    return route.alias if route.alias is not None else routing.DEFAULT_ALIAS


def known_relays() -> set[str]:
    """The names ``MAILER_RATE_LIMITS`` may use: every ``MAILERS`` alias that delivers, and the relay of
    every route that resolves ("default" for ``MAILER_EMAIL_BACKEND``)."""
    names = set()
    if routing.mailers_configured():
        names.update(alias for alias, config in settings.MAILERS.items() if not routing.queues(config))
    for alias in routing.aliases():
        try:
            names.add(relay_of(routing.route(alias)))
        except Exception:  # reported by check_delivery
            pass
    return names


_parsed: tuple[Any, dict[str, list[Limit]]] | None = None


def limits_for(relay: str) -> list[Limit]:
    """The configured limits of ``relay`` (``[]``: none). The setting is parsed once per value."""
    global _parsed
    setting = mailer_settings.RATE_LIMITS
    if _parsed is None or _parsed[0] is not setting:
        relays = setting.keys() if isinstance(setting, Mapping) else ()  # the system check judges the names
        _parsed = (setting, parse_limits(setting, relays))
    return _parsed[1].get(relay, [])


# --- Reserving and giving back --------------------------------------------------------------------------


def reserve(
    relay: str,
    wanted: int,
    *,
    now: datetime.datetime | None = None,
    using: str | None = None,
    limits: Sequence[Limit] | None = None,
) -> Grant:
    """Take up to ``wanted`` tokens for deliveries to ``relay`` now; as many as every limit allows.

    Runs in its own short transaction on the database of :class:`~mailer.models.RelayState` (or
    ``using``), which holds the relay's row lock until it commits. Call it OUTSIDE any transaction that
    holds row locks on messages: inside one, the relay lock would be held until that transaction ends,
    serialising every sender of the relay behind it (and two senders could deadlock, each holding
    messages the other waits for). A relay without limits is granted everything with no query.

    ``now``: the time of the reservation (default ``timezone.now()``, read at call time); tests pass a
    controlled clock. ``limits``: instead of the relay's ``MAILER_RATE_LIMITS`` entry.
    """
    if wanted < 0:
        raise ValueError(f"wanted must be 0 or more, not {wanted!r}")
    now = now or timezone.now()
    limits = list(limits_for(relay) if limits is None else limits)
    if not limits or not wanted:
        return Grant(relay, wanted, now)
    using = using or router.db_for_write(RelayState)
    while True:
        with transaction.atomic(using=using):
            if _lock(relay, using):
                used = _window_sums(relay, limits, now, using)
                granted = max(0, min(wanted, *(limit.count - used[limit] for limit in limits)))
                reservation = None
                if granted:
                    reservation = RateReservation.objects.using(using).create(relay=relay, at=now, count=granted).pk
                retry_at = None
                if granted < wanted:
                    after = {limit: used[limit] + granted for limit in limits}
                    retry_at = _retry_at(relay, limits, after, now, using)
                break
        _create_state(relay, using)  # the first reservation for this relay: then lock it as above
    _purge_now_and_then(relay, limits, now, using)
    return Grant(relay, granted, now, retry_at, reservation)


def give_back(grant: Grant, unused: int | None = None, *, using: str | None = None) -> int:
    """Return ``unused`` tokens of ``grant`` (default: all it still holds), so that they count for no window.

    For a sender that reserved more than it delivered. Only the grant's own row shrinks (or goes, when
    nothing of it was used): tokens are given back at the time they were taken, so no window that holds
    the other reservations changes. Needs no lock: a smaller row never lets anyone past a limit, and only
    the sender that holds the grant changes its row. Returns the number given back, which is less than
    ``unused`` when earlier calls gave some back already.
    """
    if grant.reservation is None:
        return 0
    if unused is not None and not 0 <= unused <= grant.granted:
        raise ValueError(f"unused must be from 0 to {grant.granted}, not {unused!r}")
    rows = RateReservation.objects.using(using or router.db_for_write(RateReservation)).filter(pk=grant.reservation)
    held = rows.values_list("count", flat=True).first() or 0
    unused = held if unused is None else min(unused, held)
    if unused and unused == held:
        rows.delete()
    elif unused:
        rows.update(count=F("count") - unused)
    return unused


def purge(
    older_than: datetime.timedelta | None = None,
    *,
    now: datetime.datetime | None = None,
    using: str | None = None,
) -> int:
    """Delete the reservations of every relay taken more than ``older_than`` ago; the number deleted.

    The default keeps the longest configured window (a day when none is configured) and a minute more.
    :func:`reserve` already purges the rows of the relay it reserves for, once a minute per process; this
    is for housekeeping, and for relays whose limits were removed from the setting.
    """
    if older_than is None:
        windows = [limit.seconds for limits in _all_limits().values() for limit in limits]
        older_than = datetime.timedelta(seconds=max(windows, default=UNITS["d"])) + PURGE_MARGIN
    now = now or timezone.now()
    rows = RateReservation.objects.using(using or router.db_for_write(RateReservation))
    return rows.filter(at__lte=now - older_than).delete()[0]


# --- Inside -------------------------------------------------------------------------------------------


def _all_limits() -> dict[str, list[Limit]]:
    setting = mailer_settings.RATE_LIMITS
    return {relay: limits_for(relay) for relay in setting} if isinstance(setting, Mapping) else {}


def _lock(relay: str, using: str) -> bool:
    """Hold the relay's row lock until the transaction ends; False if the relay has no row yet.

    PostgreSQL and MariaDB/MySQL: ``SELECT ... FOR UPDATE``. SQLite has no row locks, and a transaction
    that reads first and writes later fails at once (not after the busy timeout) when another process
    wrote meanwhile; an UPDATE as the first statement takes SQLite's write lock up front, so other
    processes wait for it as for any write.
    """
    states = RelayState.objects.using(using).filter(relay=relay)
    if connections[using].features.has_select_for_update:
        return states.select_for_update().exists()
    return states.update(relay=relay) > 0


def _create_state(relay: str, using: str) -> None:
    """Create the relay's row, in a transaction of its own, unless another process just did.

    Not inside the transaction that then locks it: on MariaDB/MySQL, processes that failed to insert the
    same key keep a shared lock on it, and two of them asking for the row lock deadlock.
    """
    try:
        with transaction.atomic(using=using):
            RelayState.objects.using(using).create(relay=relay)
    except IntegrityError:
        pass  # created by another process meanwhile


def _window_sums(relay: str, limits: Sequence[Limit], now: datetime.datetime, using: str) -> dict[Limit, int]:
    """The tokens reserved in each limit's window ending now: one aggregate query over the longest one.

    Rows stamped after ``now`` (another host's clock ahead of this one) count too.
    """
    longest = max(limit.seconds for limit in limits)
    rows = RateReservation.objects.using(using).filter(relay=relay, at__gt=now - datetime.timedelta(seconds=longest))
    sums = rows.aggregate(
        **{
            f"w{limit.seconds}": Sum("count", filter=Q(at__gt=now - datetime.timedelta(seconds=limit.seconds)))
            for limit in {limit.seconds: limit for limit in limits}.values()
        }
    )
    return {limit: sums[f"w{limit.seconds}"] or 0 for limit in limits}


def _retry_at(
    relay: str, limits: Sequence[Limit], used: Mapping[Limit, int], now: datetime.datetime, using: str
) -> datetime.datetime:
    """The earliest time at which every limit has room for one more token, if nobody reserves meanwhile.

    A limit with ``used`` tokens in its window has room once ``used - (N - 1)`` of them left it; a
    reservation taken at ``at`` leaves the window of ``T`` seconds at ``at + T`` exactly (windows are
    ``(t - T, t]``). The answer is the latest of these times over the limits that are full.
    """
    retry_at = now
    for limit in limits:
        excess = used[limit] - (limit.count - 1)
        if excess <= 0:
            continue
        window = datetime.timedelta(seconds=limit.seconds)
        rows = (
            RateReservation.objects.using(using)
            .filter(relay=relay, at__gt=now - window)
            .order_by("at", "pk")
            .values_list("at", "count")
        )
        start = 0
        while excess > 0:
            chunk = list(rows[start : start + WALK_CHUNK])
            if not chunk:  # cannot happen while the lock is held; a limit changed meanwhile, say
                break
            for at, count in chunk:
                excess -= count
                if excess <= 0:
                    retry_at = max(retry_at, at + window)
                    break
            start += WALK_CHUNK
    return retry_at


_last_purge: dict[tuple[str, str], datetime.datetime] = {}


def _purge_now_and_then(relay: str, limits: Sequence[Limit], now: datetime.datetime, using: str) -> None:
    """Delete the relay's rows older than its longest window (and a margin), once a minute per process."""
    last = _last_purge.get((relay, using))
    if last is not None and last <= now < last + PURGE_INTERVAL:
        return
    _last_purge[relay, using] = now
    oldest = now - datetime.timedelta(seconds=max(limit.seconds for limit in limits)) - PURGE_MARGIN
    RateReservation.objects.using(using).filter(relay=relay, at__lte=oldest).delete()
