"""The queue and the log as Prometheus metrics: ``mailer_status --prometheus`` and :func:`mailer.views.metrics`.

:func:`prometheus_text` writes the figures of :func:`mailer.status.queue_status` in the Prometheus text
exposition format, version 0.0.4 (``# HELP`` and ``# TYPE`` lines, then one sample a line). Nothing is
counted here: the figures, and what they cost (a handful of aggregate queries, whatever the queue's size),
are those of :mod:`mailer.status`, so the metrics always agree with ``mailer_status`` and ``--json``.

Every series is a gauge: the queue is a level, and so is the log's size (``mailer_log_entries``, every entry
the log table holds): ``purge_mail_log`` deletes entries, and a counter must never go down. What was sent
lately is counted over sliding windows (``mailer_log_recent_entries``, the last hour and day) rather than
left to ``rate()`` over a figure that purges lower. The figures are read with ``queue_status(whole_log=True)``:
three queries, the log's one scanning the whole log. The series and how to use them are listed in
``docs/metrics.rst``; no ``prometheus_client`` is needed to write them.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from django.utils import timezone

from mailer import routing
from mailer.status import RESULT_NAMES, AliasCounts, QueueStatus, queue_status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The priority label of mailer_queue_messages, written for every alias; "other" (priorities set by hand) only
# where such messages are queued.
PRIORITIES = ("high", "medium", "low", "other", "deferred")
WINDOWS = (("1h", "last_hour"), ("24h", "last_day"))

Sample = tuple[Mapping[str, str], float]


def prometheus_text(status: QueueStatus | None = None) -> str:
    """The metrics in the Prometheus text format, ending with a newline.

    ``status``: figures already read with ``queue_status(whole_log=True)`` (default: read now). A status
    read without ``whole_log`` lacks the whole log's counts: ValueError.
    """
    if status is None:
        status = queue_status(whole_log=True)
    if status.log_total is None:
        raise ValueError("prometheus_text() needs the whole log counted: pass queue_status(whole_log=True)")
    by_alias = {share.alias: share for share in status.by_alias}
    aliases = sorted(set(by_alias) | set(queue_aliases()))

    def per_alias(figure: str) -> list[Sample]:
        return [({"alias": alias}, _figure(by_alias, alias, figure)) for alias in aliases]

    queued = [
        ({"alias": alias, "priority": priority}, _figure(by_alias, alias, priority))
        for alias in aliases
        for priority in PRIORITIES
        if priority != "other" or _figure(by_alias, alias, priority)
    ]
    families = [
        (
            "mailer_queue_messages",
            "Messages in the queue by the MAILERS alias they were queued through and priority: due to be sent now "
            '(high, medium, low; "other" for a priority set by hand) or set aside until retry_deferred (deferred).',
            queued,
        ),
        (
            "mailer_queue_waiting_messages",
            "Messages waiting for an automatic retry after a failure.",
            per_alias("waiting"),
        ),
        (
            "mailer_queue_scheduled_messages",
            "Messages queued with a send_at still ahead, not tried yet.",
            per_alias("scheduled"),
        ),
        (
            "mailer_queue_oldest_age_seconds",
            "Seconds since the message due the longest fell due (0 when none is due).",
            [({}, status.oldest_queued_age or 0.0)],
        ),
        (
            "mailer_queue_paused_messages",
            "Messages due to be sent now that go to a paused relay (also counted in mailer_queue_messages).",
            [({}, status.behind_pauses)],
        ),
        (
            "mailer_relays_paused",
            "Relays paused now because they asked the senders to slow down.",
            [({}, len(status.paused))],
        ),
        (
            "mailer_relay_pause_remaining_seconds",
            "Seconds until the pause of a relay paused now ends.",
            [({"relay": relay}, (until - status.checked_at).total_seconds()) for relay, until in status.paused],
        ),
        (
            "mailer_log_entries",
            "Entries in the message log by result, whatever their age (purge_mail_log lowers it).",
            [({"result": name}, getattr(status.log_total, name)) for name in RESULT_NAMES.values()],
        ),
        (
            "mailer_log_recent_entries",
            "Log entries attempted within the last hour (window 1h) and the last 24 hours (window 24h), by result.",
            [
                ({"result": name, "window": window}, getattr(getattr(status, counts), name))
                for window, counts in WINDOWS
                for name in RESULT_NAMES.values()
            ],
        ),
        (
            "mailer_last_success_timestamp_seconds",
            "When the newest successful log entry was written, in seconds since the Unix epoch.",
            [({}, _timestamp(status.last_success))] if status.last_success is not None else [],
        ),
    ]
    return "".join(_family(name, text, samples) for name, text, samples in families)


def queue_aliases() -> list[str]:
    """The aliases mail may be queued through: "default" and every ``MAILERS`` alias that queues."""
    found = []
    for alias in routing.aliases():
        if alias is None:
            found.append(routing.DEFAULT_ALIAS)
        elif routing.queues(routing.mailer_config(alias)):
            found.append(alias)
    return found


def _figure(by_alias: Mapping[str, AliasCounts], alias: str, figure: str) -> int:
    share = by_alias.get(alias)
    return getattr(share, figure) if share is not None else 0


def _timestamp(moment: datetime.datetime) -> float:
    if timezone.is_naive(moment):  # USE_TZ off: the database gave a time in TIME_ZONE
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment.timestamp()


def _family(name: str, text: str, samples: Iterable[Sample]) -> str:
    lines = [f"# HELP {name} {escape_help(text)}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        pairs = ",".join(f'{label}="{escape_label_value(str(v))}"' for label, v in labels.items())
        lines.append(f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 3))


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it between double quotes: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A ``# HELP`` text: backslash and newline escaped (quotes are not)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")
