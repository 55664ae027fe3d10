"""The state of the queue and the log, for ``manage.py mailer_status`` and for monitoring code.

:func:`queue_status` makes a handful of cheap queries and decodes no message:

1. the relays' pauses (:class:`~mailer.models.RelayState`, one row per relay);
2. the queue, grouped by priority and alias: per group, how many rows, how many wait for a retry or for
   their ``send_at`` (``not_before`` still ahead), the next of each, how many due rows wait behind a
   paused relay, and since when the longest-waiting due row has been due; one pass over the queue table;
3. the log of the last day: the newest entry attempted before the window is found by walking the primary
   key backwards, and the entries after it are counted in one ``GROUP BY result``, again along the primary
   key. The log has no index on ``when_attempted``, but entries are written in the order they are
   attempted, so the cost is that of the last day's entries, not of the whole log;
4. the last success: within the last day from the same query; only when there was none, the newest
   success before, along the primary key.

With ``whole_log=True`` (the Prometheus metrics), 3 and 4 are one ``GROUP BY result`` over the whole log
that also counts every entry (:attr:`QueueStatus.log_total`): three queries, but a scan of the whole log.

:func:`problems` is the health verdict on those figures (``mailer_status --max-age/--max-deferred``);
it decodes at most a few of the next messages to send (:func:`undecodable_here`).
"""

from __future__ import annotations

import datetime
import operator
from collections import Counter
from dataclasses import asdict, dataclass
from functools import reduce
from typing import Any

from django.db.models import Case, Count, DateTimeField, Max, Min, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from mailer import claims, pacing, routing, serialization
from mailer.choices import Priority, Result
from mailer.models import Message, MessageLog, RelayState

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)

# Each result's name in ResultCounts and in as_dict(): "success", "dont_send", "failure".
RESULT_NAMES = {result.value: result.name.lower() for result in Result}


@dataclass(frozen=True)
class ResultCounts:
    """Log entries of a time window, by result."""

    success: int = 0
    dont_send: int = 0
    failure: int = 0


# What the queue is counted into: the due messages by priority ("other": a priority set by hand), the deferred
# ones, and those not due yet (waiting for a retry, or scheduled), both whatever their priority.
QUEUE_FIGURES = ("high", "medium", "low", "other", "deferred", "waiting", "scheduled")


@dataclass(frozen=True)
class AliasCounts:
    """The messages queued through one ``MAILERS`` alias, counted as :class:`QueueStatus` counts the queue."""

    alias: str  # "default" for those queued without one (EMAIL_BACKEND, mailer.send_mail(), 2.x rows)
    high: int = 0
    medium: int = 0
    low: int = 0
    other: int = 0
    deferred: int = 0
    waiting: int = 0
    scheduled: int = 0


@dataclass(frozen=True)
class QueueStatus:
    """What :func:`queue_status` found. Times are aware datetimes in UTC when ``USE_TZ`` is on."""

    checked_at: datetime.datetime
    high: int
    medium: int
    low: int
    deferred: int
    # Since when the message due the longest has been due: when it was queued, or when its retry fell due.
    oldest_queued: datetime.datetime | None
    last_hour: ResultCounts
    last_day: ResultCounts
    last_success: datetime.datetime | None  # when_attempted of the newest successful log entry
    # Waiting messages whose priority is none of the four (0, 5, 99... set by hand): senders send them too.
    other: int = 0
    # Messages not deferred whose next attempt is still ahead (not_before > checked_at) after a failed one,
    # whatever their priority: they are counted here, not under high, medium, low or other.
    waiting: int = 0
    next_retry: datetime.datetime | None = None  # the earliest not_before of the waiting messages
    # The same for messages not tried yet: their send_at is still ahead.
    scheduled: int = 0
    next_scheduled: datetime.datetime | None = None
    # The relays paused at checked_at because they asked to slow down, with the end of each pause, by name;
    # and how many of the due messages (counted under their priority) go to one of them.
    paused: tuple[tuple[str, datetime.datetime], ...] = ()
    behind_pauses: int = 0
    # The same counts per alias the messages were queued through, by alias; they add up to the figures above.
    by_alias: tuple[AliasCounts, ...] = ()
    # Every entry in the log by result, whatever its age: what the log table holds (purge_mail_log lowers it).
    # None unless read with queue_status(whole_log=True), as it costs a scan of the whole log.
    log_total: ResultCounts | None = None

    @property
    def queued(self) -> int:
        """Messages due to be sent now: high, medium, low and any other priority but deferred, not waiting."""
        return self.high + self.medium + self.low + self.other

    @property
    def total(self) -> int:
        """Every message in the queue table: due, waiting for a retry, scheduled and deferred."""
        return self.queued + self.waiting + self.scheduled + self.deferred

    @property
    def oldest_queued_age(self) -> float | None:
        """Seconds the message due the longest has been due (0 if its clock was ahead); None if none is due."""
        if self.oldest_queued is None:
            return None
        return max(0.0, (self.checked_at - self.oldest_queued).total_seconds())

    @property
    def next_retry_in(self) -> float | None:
        """Seconds until the first waiting message falls due; None if none waits."""
        return self._until(self.next_retry)

    @property
    def next_scheduled_in(self) -> float | None:
        """Seconds until the first scheduled message falls due; None if none is scheduled."""
        return self._until(self.next_scheduled)

    def _until(self, moment: datetime.datetime | None) -> float | None:
        return None if moment is None else max(0.0, (moment - self.checked_at).total_seconds())

    @property
    def last_success_age(self) -> float | None:
        if self.last_success is None:
            return None
        return max(0.0, (self.checked_at - self.last_success).total_seconds())

    def as_dict(self) -> dict:
        """A JSON-ready dict (times as ISO 8601 strings, ages in seconds); docs/status.rst shows it."""

        def iso(moment: datetime.datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        def seconds(value: float | None) -> float | None:
            return round(value, 3) if value is not None else None

        return {
            "checked_at": iso(self.checked_at),
            "queue": {
                "high": self.high,
                "medium": self.medium,
                "low": self.low,
                "waiting": self.waiting,
                "scheduled": self.scheduled,
                "deferred": self.deferred,
                "other": self.other,
                "total": self.total,
            },
            "oldest_queued": iso(self.oldest_queued),
            "oldest_queued_age_seconds": seconds(self.oldest_queued_age),
            "next_retry": iso(self.next_retry),
            "next_retry_in_seconds": seconds(self.next_retry_in),
            "next_scheduled": iso(self.next_scheduled),
            "next_scheduled_in_seconds": seconds(self.next_scheduled_in),
            "paused_relays": [
                {"relay": relay, "paused_until": iso(until), "paused_for_seconds": seconds(self._until(until))}
                for relay, until in self.paused
            ],
            "behind_paused_relays": self.behind_pauses,
            "log": {"last_hour": asdict(self.last_hour), "last_day": asdict(self.last_day)},
            "last_success": iso(self.last_success),
            "last_success_age_seconds": seconds(self.last_success_age),
        }


OTHER = "other"
PRIORITY_NAMES = {priority.value: priority.name.lower() for priority in Priority}  # 1: "high"... 4: "deferred"


@dataclass
class _QueueCounts:
    by_alias: dict[str, Counter]  # per alias, the QUEUE_FIGURES of its rows
    next_retry: datetime.datetime | None = None
    next_scheduled: datetime.datetime | None = None
    behind_pauses: int = 0
    oldest_due: datetime.datetime | None = None

    def shares(self) -> tuple[AliasCounts, ...]:
        return tuple(AliasCounts(alias, **self.by_alias[alias]) for alias in sorted(self.by_alias))


def _queue_counts(now: datetime.datetime, pauses: dict[str, datetime.datetime]) -> _QueueCounts:
    """The queue in one ``GROUP BY priority, mailer``: per alias, due rows per priority, the waiting and
    scheduled ones, the deferred ones.

    Priorities django-mailer does not write (set by hand) are counted under ``OTHER``. The senders leave out
    deferred rows and rows whose ``not_before`` is still ahead (see ``MessageQuerySet.due()``): after a failed
    attempt they wait for a retry, before any they are scheduled. Every other row is due. A row is due since
    it was queued, or since its ``not_before`` passed if that came later, or since the last pause of its
    relay ended if that came later still; while that pause lasts, it waits behind it and is due since no time.
    """
    ahead = Q(not_before__gt=now)
    tried = Q(attempts__gt=0)
    due_since, behind = _due_since(pauses, now)
    due = ~ahead & ~behind if behind is not None else ~ahead
    rows = (
        Message.objects.order_by()
        .values("priority", "mailer")
        .annotate(
            n=Count("id"),
            waiting=Count("id", filter=ahead & tried),
            next_retry=Min("not_before", filter=ahead & tried),
            scheduled=Count("id", filter=ahead & ~tried),
            next_scheduled=Min("not_before", filter=ahead & ~tried),
            behind=Count("id", filter=~ahead & behind) if behind is not None else Value(0),
            due_since=Min(due_since, filter=due),
        )
    )
    counts = _QueueCounts({})
    for row in rows:
        share = counts.by_alias.setdefault(row["mailer"] or routing.DEFAULT_ALIAS, Counter())
        priority = PRIORITY_NAMES.get(row["priority"], OTHER)
        if priority == "deferred":
            share[priority] += row["n"]
            continue
        share[priority] += row["n"] - row["waiting"] - row["scheduled"]
        share["waiting"] += row["waiting"]
        share["scheduled"] += row["scheduled"]
        counts.next_retry = _earliest(counts.next_retry, row["next_retry"])
        counts.next_scheduled = _earliest(counts.next_scheduled, row["next_scheduled"])
        counts.behind_pauses += row["behind"]
        counts.oldest_due = _earliest(counts.oldest_due, row["due_since"])
    return counts


def _due_since(pauses: dict[str, datetime.datetime], now: datetime.datetime) -> tuple[Any, Q | None]:
    """Since when a due row is due (an expression), and which rows wait behind a relay paused at ``now``
    (``None``: none).

    ``pauses``: the end of each relay's last pause (:class:`~mailer.models.RelayState`). Which relay a row
    goes to is its ``mailer`` alias's route, as the senders route it; when the routes can't be read (a
    configuration that cannot send), pauses are left out: the senders send nothing then either.
    """
    since = Greatest("when_added", Coalesce("not_before", "when_added"))
    if not pauses:
        return since, None
    try:
        routes = routing.routes()
    except Exception:
        return since, None
    behind, ended = [], []
    for relay, until in pauses.items():
        mailers = pacing.claimable(routes, {relay})
        if mailers is None:
            continue  # no message goes there
        goes_there = ~claims.mailers_filter(mailers)
        if until > now:
            behind.append(goes_there)
        else:
            ended.append(When(goes_there, then=Greatest(since, Value(until, output_field=DateTimeField()))))
    if ended:
        since = Case(*ended, default=since, output_field=DateTimeField())
    return since, reduce(operator.or_, behind) if behind else None


def _earliest(a: datetime.datetime | None, b: datetime.datetime | None) -> datetime.datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _log_counts(
    now: datetime.datetime, whole_log: bool
) -> tuple[ResultCounts, ResultCounts, datetime.datetime | None, ResultCounts | None]:
    """The last hour, the last day and (``whole_log``) every entry by result in one ``GROUP BY result``, and the
    last success. Without ``whole_log`` only the last day is read (see the module's docstring)."""
    day_ago, boundary, rows = now - DAY, None, MessageLog.objects.order_by()
    if not whole_log:
        # The newest entry attempted before the window: the window's entries come after it.
        before = MessageLog.objects.filter(when_attempted__lt=day_ago).order_by("-id").values_list("id", flat=True)
        boundary = before.first()
        rows = rows.filter(when_attempted__gte=day_ago, **({"id__gt": boundary} if boundary is not None else {}))
    hour, day = Q(when_attempted__gte=now - HOUR), Q(when_attempted__gte=day_ago)
    grouped = rows.values("result").annotate(
        hour=Count("id", filter=hour), day=Count("id", filter=day), total=Count("id"), newest=Max("when_attempted")
    )
    found = {row["result"]: row for row in grouped}
    last_hour, last_day, total = (
        ResultCounts(**{name: found[code][figure] if code in found else 0 for code, name in RESULT_NAMES.items()})
        for figure in ("hour", "day", "total")
    )
    last_success = found.get(Result.SUCCESS.value, {}).get("newest")
    if last_success is None and not whole_log:
        older = MessageLog.objects.filter(result=Result.SUCCESS)
        if boundary is not None:
            older = older.filter(id__lte=boundary)
        last_success = older.order_by("-id").values_list("when_attempted", flat=True).first()
    return last_hour, last_day, last_success, total if whole_log else None


def queue_status(now: datetime.datetime | None = None, *, whole_log: bool = False) -> QueueStatus:
    """The queue by priority, what waits for a retry, the oldest due message, the log of the last hour and day,
    the last success.

    ``whole_log``: also count every log entry by result (:attr:`QueueStatus.log_total`), reading the whole
    log instead of its last day (see the module's docstring). The databases are those the routers give
    :class:`~mailer.models.Message` and :class:`~mailer.models.MessageLog` for reading. ``now`` is for tests.
    """
    now = now or timezone.now()
    ends = RelayState.objects.filter(paused_until__isnull=False).order_by("relay")
    pauses = dict(ends.values_list("relay", "paused_until"))
    counts = _queue_counts(now, pauses)
    shares = counts.shares()
    last_hour, last_day, last_success, log_total = _log_counts(now, whole_log)
    return QueueStatus(
        checked_at=now,
        **{figure: sum(getattr(share, figure) for share in shares) for figure in QUEUE_FIGURES},
        next_retry=counts.next_retry,
        next_scheduled=counts.next_scheduled,
        paused=tuple((relay, until) for relay, until in pauses.items() if until > now),
        behind_pauses=counts.behind_pauses,
        by_alias=shares,
        oldest_queued=counts.oldest_due,
        last_hour=last_hour,
        last_day=last_day,
        last_success=last_success,
        log_total=log_total,
    )


def undecodable_here(limit: int = 10) -> list[str]:
    """Why the first ``limit`` messages waiting to be sent (in send order) can't be decoded by this process.

    Only intact rows that this process cannot read count (a signature no key
    of ``SECRET_KEY``/``SECRET_KEY_FALLBACKS`` matches, a class this code
    lacks): a sender with this configuration would leave them queued. Corrupt
    rows are left to the sender, which logs them as failures. Reads at most
    ``limit`` rows.
    """
    rows = (
        Message.objects.non_deferred()
        .order_by("priority", "when_added", "id")
        .values_list("id", "message_data")[:limit]
    )
    problems = []
    for pk, data in rows:
        try:
            serialization.loads(data)
        except serialization.NotDecodableHere as exc:
            problems.append(f"message {pk} cannot be decoded by this configuration: {exc}")
        except serialization.UndecodableMessage:
            pass
    return problems


def problems(status: QueueStatus, max_age: int | None = None, max_deferred: int | None = None) -> list[str]:
    """The health verdict of ``mailer_status --max-age/--max-deferred``: why the queue looks stuck, if it does.

    An empty list means healthy. ``max_age``: seconds a message due to be sent (not deferred) may have
    waited since it fell due; ``max_deferred``: how many messages may be deferred. Messages waiting for a
    retry or for their ``send_at`` are neither: their time has not come, however old they are. Once it
    has, they count again, from the moment they fell due, so a retry or a scheduled message a sender picks
    up on time never looks stuck. Nor does mail behind a paused relay while the pause lasts (it counts
    from the pause's end after), and a paused relay is not a problem by itself. With either
    limit given, messages this process cannot decode (:func:`undecodable_here`) are problems too: a sender
    configured as this process is would hold them back. The texts name the command's options.
    """
    found = []
    age = status.oldest_queued_age
    if max_age is not None and age is not None and age > max_age:
        found.append(
            f"the oldest queued message has waited {age:.1f}s ({short_duration(age)}), "
            f"longer than --max-age {max_age}; is a sender running?"
        )
    if max_deferred is not None and status.deferred > max_deferred:
        found.append(f"{status.deferred} message(s) deferred, more than --max-deferred {max_deferred}")
    if max_age is not None or max_deferred is not None:
        # Mail a sender with this configuration would hold back (another SECRET_KEY, missing code).
        found.extend(undecodable_here())
    return found


def short_duration(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h``: a duration as people read it, to the second or coarser."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
