"""The :mod:`mailer.signals` of one batch: built from what the batch records, sent once its transaction commits.

Queueing (:mod:`mailer.enqueue`) and each sending batch (:mod:`mailer.passes`) make an :class:`Events`,
only when some signal has a receiver (:meth:`Events.if_listened`): otherwise nothing here runs. Events are
built from the log rows the batch writes (:func:`mailer.logrows.log_fields`), not from the emails, so no
message is read again for them. Sent with ``send_robust()`` from ``transaction.on_commit()``: a receiver
that raises is logged and can neither stop a send nor roll back what was recorded.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

from django.core.mail import EmailMessage
from django.db import transaction
from django.dispatch import Signal

from mailer import signals
from mailer.choices import PRIORITY_DEFERRED, RESULT_DONT_SEND, RESULT_FAILURE, RESULT_SUCCESS
from mailer.logrows import failure_text
from mailer.message_ids import get_message_id
from mailer.models import Message
from mailer.searchcols import addresses, search_columns
from mailer.signals import MessageEvent

logger = logging.getLogger("mailer.signals")

SIGNALS: dict[str, Signal] = {
    "queued": signals.messages_queued,
    "sent": signals.messages_sent,
    "deferred": signals.messages_deferred,
    "failed": signals.messages_failed,
    "skipped": signals.messages_skipped,
}


class Outcome(Protocol):
    """What a :class:`mailer.outcomes.Outcome` says of a message.

    Not imported: :mod:`mailer.outcomes` leads (through the dispatcher, the routes and the backend) to
    queueing, which imports this module.
    """

    counts: str | None
    logs: tuple[dict, ...]
    update: dict[str, Any] | None


class Events:
    """The events of one batch, by the name of their signal (a key of :data:`SIGNALS`)."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted  # the signals with a receiver when the batch began
        self.events: dict[str, list[MessageEvent]] = {name: [] for name in wanted}

    @classmethod
    def if_listened(cls) -> Events | None:
        """A new batch's events, or ``None`` when no signal has a receiver (the usual case: then nothing is built)."""
        # Signal.receivers first: no lock taken, no list built, for a signal nobody connected to.
        wanted = {name for name, signal in SIGNALS.items() if signal.receivers and signal.has_listeners(Message)}
        return cls(wanted) if wanted else None

    def queued(self, row: Mapping[str, Any], email: EmailMessage) -> None:
        """A message queued: ``row`` is its queue row's fields, ``email`` what was stored (with its Message-ID)."""
        if "queued" in self.wanted:
            event = MessageEvent(
                pk=None,
                message_id=get_message_id(email),
                mailer=row["mailer"],
                priority=row["priority"],
                recipients=tuple(addresses(row["recipients"])),
                subject=row["subject_text"] or "",
                next_attempt=row["not_before"],
            )
            self.events["queued"].append(event)

    def outcome(self, message: Message, outcome: Outcome, email: EmailMessage | None = None) -> None:
        """What became of a claimed ``message``: one event per log row the outcome writes.

        A row that says it was sent is a sent event (without the recipients the other rows say were refused);
        a failure row, a deferred event if the message stays queued for it (the row of the next attempt, or
        one set aside for ``retry_deferred``), else a failed one; a don't-send row, a skipped event.
        """
        if outcome.counts not in SIGNALS:
            return  # left queued as it was, or held back: nothing happened to it yet
        logs = outcome.logs
        if not logs:
            if outcome.counts == "deferred" and "deferred" in self.wanted:
                # MAILER_ERROR_HANDLER said "deferred": the handler logs for itself, the email says the rest.
                email = email if email is not None else message.email
                row = {**search_columns(email), "message_id": get_message_id(email)}
                self.events["deferred"].append(_event(message, row))
            return
        retry = (outcome.update or {}).get("not_before")  # the time of the next attempt, for the last row
        last = len(logs) - 1
        for index, row in enumerate(logs):
            name = _signal_of(row, retry is not None and index == last)
            if name not in self.wanted:
                continue
            if name == "sent" and last:  # some recipients refused: each is in a failed or deferred event
                refused = {
                    a for other in logs if other["result"] == RESULT_FAILURE for a in addresses(other["recipients"])
                }
                kept = tuple(a for a in addresses(row["recipients"]) if a not in refused)
                self.events[name].append(_event(message, row, recipients=kept))
            elif name in ("sent", "skipped"):
                self.events[name].append(_event(message, row))
            else:
                when = retry if name == "deferred" else None
                self.events[name].append(_event(message, row, error=failure_text([row]), next_attempt=when))

    def skipped(self, message: Message, row: Mapping[str, Any]) -> None:
        """An email the don't-send list stopped at queueing (``message``: unsaved, ``row``: its log row)."""
        if "skipped" in self.wanted:
            self.events["skipped"].append(_event(message, row))

    def send_on_commit(self, using: str) -> None:
        """Send the signals once the current transaction on ``using`` commits (at once outside a transaction)."""
        events = {name: batch for name, batch in self.events.items() if batch}
        self.events = {name: [] for name in self.wanted}
        if events:
            transaction.on_commit(partial(send, events), using=using, robust=True)


def send(events: Mapping[str, list[MessageEvent]]) -> None:
    """Send each signal with its events; log what a receiver raised, on ``mailer.signals``."""
    for name, batch in events.items():
        for receiver, response in SIGNALS[name].send_robust(sender=Message, messages=batch):
            if isinstance(response, Exception):
                text = "a receiver of the messages_%s signal (%r) raised; the %d message(s) are recorded all the same"
                logger.error(text, name, receiver, len(batch), exc_info=response)


def _signal_of(row: Mapping[str, Any], retried: bool) -> str:
    """The signal of a claimed message's log row (``retried``: the row of an attempt to come)."""
    result = row["result"]
    if result == RESULT_SUCCESS:
        return "sent"
    if result == RESULT_DONT_SEND:
        return "skipped"
    # MAILER_DEFER_PERMANENT_FAILURES's rows carry the deferred priority: the message waits for retry_deferred.
    return "deferred" if retried or row["priority"] == PRIORITY_DEFERRED else "failed"


def _event(
    message: Message,
    row: Mapping[str, Any],
    recipients: tuple[str, ...] | None = None,
    error: str = "",
    next_attempt: datetime.datetime | None = None,
) -> MessageEvent:
    """The event of claimed (or unsaved) ``message`` whose log row is ``row`` (``recipients``: else the row's)."""
    return MessageEvent(
        message.pk,
        row.get("message_id"),
        message.mailer,
        message.priority,
        tuple(addresses(row.get("recipients"))) if recipients is None else recipients,
        row.get("subject_text") or "",
        error,
        next_attempt,
        row.get("provider_message_id"),
    )
