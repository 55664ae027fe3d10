"""The state of the queue and the log, for ``manage.py mailer_status`` and for monitoring code.

:func:`queue_status` makes a handful of cheap queries and decodes no message:

1. the queue, grouped by priority: count and oldest ``when_added`` per priority (the queue's index
   on ``priority, when_added, id`` covers it);
2. the log of the last day: the newest entry attempted before the window is found by walking the
   primary key backwards, and the entries after it are counted by result and window, again along
   the primary key. The log has no index on ``when_attempted``, but entries are written in the
   order they are attempted, so the cost is that of the last day's entries, not of the whole log;
3. the last success: within the last day from the same query; only when there was none, the newest
   success before, along the primary key.

:func:`problems` is the health verdict on those figures (``mailer_status --max-age/--max-deferred``);
it decodes at most a few of the next messages to send (:func:`undecodable_here`).
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from mailer import serialization
from mailer.choices import Priority, Result
from mailer.models import Message, MessageLog

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


@dataclass(frozen=True)
class QueueStatus:
    """What :func:`queue_status` found. Times are aware datetimes in UTC when ``USE_TZ`` is on."""

    checked_at: datetime.datetime
    high: int
    medium: int
    low: int
    deferred: int
    oldest_queued: datetime.datetime | None  # when_added of the oldest message waiting to be sent (not deferred)
    last_hour: ResultCounts
    last_day: ResultCounts
    last_success: datetime.datetime | None  # when_attempted of the newest successful log entry
    # Waiting messages whose priority is none of the four (0, 5, 99... set by hand): senders send them too.
    other: int = 0

    @property
    def queued(self) -> int:
        """Messages waiting to be sent: high, medium, low and any other priority but deferred."""
        return self.high + self.medium + self.low + self.other

    @property
    def total(self) -> int:
        """Every message in the queue table, deferred ones included."""
        return self.queued + self.deferred

    @property
    def oldest_queued_age(self) -> float | None:
        """Seconds since the oldest waiting message was queued (0 if its clock was ahead); None if none waits."""
        if self.oldest_queued is None:
            return None
        return max(0.0, (self.checked_at - self.oldest_queued).total_seconds())

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
                "deferred": self.deferred,
                "other": self.other,
                "total": self.total,
            },
            "oldest_queued": iso(self.oldest_queued),
            "oldest_queued_age_seconds": seconds(self.oldest_queued_age),
            "log": {"last_hour": asdict(self.last_hour), "last_day": asdict(self.last_day)},
            "last_success": iso(self.last_success),
            "last_success_age_seconds": seconds(self.last_success_age),
        }


OTHER = "other"


def _queue_counts() -> tuple[dict[int | str, int], datetime.datetime | None]:
    """Rows per priority; those of a priority django-mailer does not write (set by hand) under ``OTHER``.

    The senders leave out only deferred rows, so every other row waits to be sent.
    """
    counts: dict[int | str, int] = {priority.value: 0 for priority in Priority}
    counts[OTHER] = 0
    oldest = None
    rows = Message.objects.order_by().values("priority").annotate(n=Count("id"), oldest=Min("when_added"))
    for row in rows:
        priority = row["priority"]
        counts[priority if priority in counts else OTHER] += row["n"]
        if priority != Priority.DEFERRED and row["oldest"] is not None:
            oldest = row["oldest"] if oldest is None else min(oldest, row["oldest"])
    return counts, oldest


def _log_counts(now: datetime.datetime) -> tuple[ResultCounts, ResultCounts, datetime.datetime | None]:
    day_ago, hour_ago = now - DAY, now - HOUR
    # The newest entry attempted before the window: the window's entries come after it.
    before = MessageLog.objects.filter(when_attempted__lt=day_ago).order_by("-id").values_list("id", flat=True)
    boundary = before.first()
    window = MessageLog.objects.filter(when_attempted__gte=day_ago)
    if boundary is not None:
        window = window.filter(id__gt=boundary)
    aggregates = {}
    for code, name in RESULT_NAMES.items():
        aggregates[f"day_{name}"] = Count("id", filter=Q(result=code))
        aggregates[f"hour_{name}"] = Count("id", filter=Q(result=code, when_attempted__gte=hour_ago))
    aggregates["last_success"] = Max("when_attempted", filter=Q(result=Result.SUCCESS))
    found = window.aggregate(**aggregates)
    last_day = ResultCounts(**{name: found[f"day_{name}"] for name in RESULT_NAMES.values()})
    last_hour = ResultCounts(**{name: found[f"hour_{name}"] for name in RESULT_NAMES.values()})
    last_success = found["last_success"]
    if last_success is None:
        older = MessageLog.objects.filter(result=Result.SUCCESS)
        if boundary is not None:
            older = older.filter(id__lte=boundary)
        last_success = older.order_by("-id").values_list("when_attempted", flat=True).first()
    return last_hour, last_day, last_success


def queue_status(now: datetime.datetime | None = None) -> QueueStatus:
    """The queue by priority, the oldest waiting message, the log of the last hour and day, the last success.

    The databases are those the routers give :class:`~mailer.models.Message` and
    :class:`~mailer.models.MessageLog` for reading. ``now`` is for tests.
    """
    now = now or timezone.now()
    counts, oldest = _queue_counts()
    last_hour, last_day, last_success = _log_counts(now)
    return QueueStatus(
        checked_at=now,
        high=counts[Priority.HIGH],
        medium=counts[Priority.MEDIUM],
        low=counts[Priority.LOW],
        deferred=counts[Priority.DEFERRED],
        other=counts[OTHER],
        oldest_queued=oldest,
        last_hour=last_hour,
        last_day=last_day,
        last_success=last_success,
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

    An empty list means healthy. ``max_age``: seconds the oldest waiting (not deferred) message may have
    waited; ``max_deferred``: how many messages may be deferred. With either given, messages this
    process cannot decode (:func:`undecodable_here`) are problems too: a sender configured as this
    process is would hold them back. The texts name the command's options.
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
