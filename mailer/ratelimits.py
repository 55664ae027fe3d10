"""Rate limits per relay (``MAILER_RATE_LIMITS``), shared by every sender process on every host.

The shared state is a reservation log in the database: before handing mail to a relay, a sender
:func:`reserve` s tokens, which writes one :class:`~mailer.models.RateReservation` row (relay, when,
how many). A reservation is decided while holding the relay's :class:`~mailer.models.RelayState` row
lock, so reservations of one relay are decided one at a time, whichever process or host makes them,
and each one sees every earlier one. A grant is the largest number that keeps every window of every
limit at or under its N, counting every reservation stamped after the window's start, so the guarantee

    no sliding window of T seconds (any start, not calendar-aligned) holds more than N reserved tokens

holds on the timestamps the reservations carry. Those are read from ``timezone.now()`` of the reserving
process: across hosts the limit is as exact as their clocks agree (NTP keeps them within milliseconds).
Stamps never go back: a host whose clock is behind stamps its reservation with the latest stamp so far,
so it never reserves past a limit by not seeing another's. How the window sums stay cheap however many
rows a day holds: :mod:`mailer.ratewindows`.

Tokens taken and not used (a sender reserved for a batch and sent fewer) go back with :func:`give_back`,
which shrinks the sender's own row, so that the window is not wasted.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from mailer import ratewindows, routing
from mailer.conf import mailer_settings
from mailer.models import RateReservation, RelayState
from mailer.ratewindows import UNITS, Limit

__all__ = [
    "Grant",
    "Limit",
    "LimitError",
    "give_back",
    "known_relays",
    "limits_for",
    "parse_limits",
    "pause",
    "pauses",
    "purge",
    "relay_of",
    "reserve",
]

LIMIT_FORMAT = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


class LimitError(ValueError):
    """``MAILER_RATE_LIMITS`` is malformed; the message names the entry."""


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
    slack: float = 0.0,
    returning: tuple[Grant, int] | None = None,
) -> Grant:
    """Take up to ``wanted`` tokens for deliveries to ``relay`` now; as many as every limit allows.

    Runs in its own short transaction on the database of :class:`~mailer.models.RelayState` (or
    ``using``), which holds the relay's row lock until it commits. Call it OUTSIDE any transaction that
    holds row locks on messages: inside one, the relay lock would be held until that transaction ends,
    serialising every sender of the relay behind it (and two senders could deadlock, each holding
    messages the other waits for). A relay without limits is granted everything with no query.

    ``now``: the time of the reservation (default ``timezone.now()``, read once the lock is held); tests pass a
    controlled clock. The grant's ``at`` is later when another process already reserved at a later time
    (its clock is ahead). ``limits``: instead of the relay's ``MAILER_RATE_LIMITS`` entry. ``slack``:
    seconds added to every window (see :class:`Limit`), so that the grant keeps the limit for deliveries
    made up to that much later than their reservation. ``returning``: a sender's earlier grant and how many
    of its tokens it did not use; they are given back (as :func:`give_back` does) in the same transaction,
    which spares a sender that renews its tokens a second round of locking.
    """
    if wanted < 0:
        raise ValueError(f"wanted must be 0 or more, not {wanted!r}")
    if returning is not None:
        _check_unused(*returning)
    limits = [dataclasses.replace(limit, slack=slack) for limit in (limits_for(relay) if limits is None else limits)]
    if not limits or not wanted:
        if returning is not None:
            give_back(*returning, using=using)
        return Grant(relay, wanted, now or timezone.now())
    using = using or router.db_for_write(RelayState)
    while True:
        with transaction.atomic(using=using):
            state = ratewindows.lock(relay, using)
            if state is not None:
                if returning is not None:
                    _give_back_locked(state, *returning, using)
                # The clock is read once the lock is held: the time spent waiting for other senders' reservations
                # would otherwise be added to the time between the stamp and the deliveries it pays for.
                grant = _reserve_locked(state, limits, wanted, now or timezone.now(), using)
                break
        ratewindows.create_state(relay, using)  # the relay's first reservation: then lock it as above
    ratewindows.purge_now_and_then(relay, limits, grant.at, using)
    return grant


def _reserve_locked(
    state: RelayState, limits: Sequence[Limit], wanted: int, now: datetime.datetime, using: str
) -> Grant:
    at = ratewindows.stamp(state, now)
    used = ratewindows.current_sums(state, limits, at, using)
    granted = max(0, min(wanted, *(limit.count - used[limit.span] for limit in limits)))
    reservation = retry_at = None
    if granted:
        reservation = RateReservation.objects.using(using).create(relay=state.relay, at=at, count=granted).pk
        ratewindows.add(state, at, granted)
    if granted < wanted:
        after = {span: tokens + granted for span, tokens in used.items()}
        retry_at = ratewindows.retry_at(state, limits, after, at, using)
    state.last_at = at
    state.save(using=using, update_fields=["windows", "last_at"])
    return Grant(state.relay, granted, at, retry_at, reservation)


def give_back(grant: Grant, unused: int | None = None, *, using: str | None = None) -> int:
    """Return ``unused`` tokens of ``grant`` (default: all it still holds), so that they count for no window.

    For a sender that reserved more than it delivered. Only the grant's own row shrinks (or goes, when
    nothing of it was used): tokens are given back at the time they were taken, so no window that holds
    the other reservations changes. A short transaction holding the relay's lock, as :func:`reserve`.
    Returns the number given back, which is less than ``unused`` when earlier calls gave some back already.
    """
    if grant.reservation is None:
        return 0
    _check_unused(grant, unused)
    using = using or router.db_for_write(RelayState)
    with transaction.atomic(using=using):
        state = ratewindows.lock(grant.relay, using)
        if state is None:
            return 0
        unused = _give_back_locked(state, grant, unused, using)
        if unused:
            state.save(using=using, update_fields=["windows"])
    return unused


def _check_unused(grant: Grant, unused: int | None) -> None:
    if unused is not None and not 0 <= unused <= grant.granted:
        raise ValueError(f"unused must be from 0 to {grant.granted}, not {unused!r}")


def _give_back_locked(state: RelayState, grant: Grant, unused: int | None, using: str) -> int:
    """:func:`give_back`'s work, with the relay's row locked; the caller saves ``state``."""
    if grant.reservation is None or grant.relay != state.relay:
        return 0
    rows = RateReservation.objects.using(using).filter(pk=grant.reservation)
    held = rows.values_list("count", flat=True).first() or 0
    unused = held if unused is None else min(unused, held)
    if not unused:
        return 0
    if unused == held:
        rows.delete()
    else:
        rows.update(count=held - unused)
    ratewindows.add(state, grant.at, -unused)
    return unused


# --- Pauses ----------------------------------------------------------------------------------------------


def pause(
    relay: str,
    retry_after: float | None = None,
    *,
    now: datetime.datetime | None = None,
    using: str | None = None,
) -> datetime.datetime:
    """Pause ``relay`` for every sender, because it answered "slow down"; when the pause ends.

    ``MAILER_RETRY_DELAY`` seconds the first time; twice the last pause when the relay slows us down again
    within that long after its last pause ended, up to ``MAILER_RETRY_MAX_DELAY``; or ``retry_after``
    seconds when the relay said how long (a Retry-After header), within the same bounds. A relay that
    another sender paused already keeps that pause. A short transaction holding the relay's lock.
    ``now``: for tests, a controlled clock.
    """
    using = using or router.db_for_write(RelayState)
    while True:
        with transaction.atomic(using=using):
            state = ratewindows.lock(relay, using)
            if state is not None:
                return _pause_locked(state, retry_after, now or timezone.now(), using)
        ratewindows.create_state(relay, using)


def _pause_locked(
    state: RelayState, retry_after: float | None, now: datetime.datetime, using: str
) -> datetime.datetime:
    if state.paused_until is not None and state.paused_until > now:
        return state.paused_until
    first, longest = float(mailer_settings.RETRY_DELAY), float(mailer_settings.RETRY_MAX_DELAY)
    last = state.pause_seconds or 0.0
    again = state.paused_until is not None and now - state.paused_until <= datetime.timedelta(seconds=last)
    seconds = min(longest, 2 * last) if again else first
    if retry_after is not None:
        seconds = min(longest, max(0.0, retry_after))
    state.paused_until = now + datetime.timedelta(seconds=seconds)
    state.pause_seconds = seconds
    state.save(using=using, update_fields=["paused_until", "pause_seconds"])
    return state.paused_until


def pauses(now: datetime.datetime | None = None, *, using: str | None = None) -> dict[str, datetime.datetime]:
    """The relays paused at ``now`` (default: now), with the end of each pause. One query, no lock."""
    now = now or timezone.now()
    rows = RelayState.objects.using(using or router.db_for_read(RelayState)).filter(paused_until__gt=now)
    return dict(rows.values_list("relay", "paused_until"))


def purge(
    older_than: datetime.timedelta | None = None,
    *,
    now: datetime.datetime | None = None,
    using: str | None = None,
) -> int:
    """Delete the reservations of every relay taken more than ``older_than`` ago; the number deleted.

    Never younger than the longest configured window (a day when none is configured) and a minute: the
    running sums still pass those. :func:`reserve` already purges the rows of the relay it reserves for,
    once a minute per process; this is for housekeeping, and for relays whose limits were removed.
    """
    windows = [limit.seconds for limits in _all_limits().values() for limit in limits]
    shortest = datetime.timedelta(seconds=max(windows, default=UNITS["d"])) + ratewindows.PURGE_MARGIN
    older_than = shortest if older_than is None else max(older_than, shortest)
    now = now or timezone.now()
    rows = RateReservation.objects.using(using or router.db_for_write(RateReservation))
    return rows.filter(at__lte=now - older_than).delete()[0]


def _all_limits() -> dict[str, list[Limit]]:
    setting = mailer_settings.RATE_LIMITS
    return {relay: limits_for(relay) for relay in setting} if isinstance(setting, Mapping) else {}
