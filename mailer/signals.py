"""Signals for a project's own code: mail queued, sent, deferred, failed, or skipped by the don't-send list.

Each is sent with ``sender=Message`` (:class:`mailer.models.Message`) and one keyword argument, ``messages``: a
list of :class:`MessageEvent`, one or more per message the batch dealt with. A sender deals with the queue in
batches (``MAILER_COMMIT_BATCH_SIZE``), and queueing stores a call's emails in one transaction: each signal is
sent once per batch, after the transaction that recorded the outcome commits, never if it rolls back. A
receiver that raises is logged on the ``mailer.signals`` logger and changes nothing of what was sent or
recorded; the other receivers still get the signal. With no receiver connected, nothing is built.
docs/signals.rst says which outcome sends which signal.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

from django.dispatch import Signal

__all__ = [
    "MessageEvent",
    "messages_deferred",
    "messages_failed",
    "messages_queued",
    "messages_sent",
    "messages_skipped",
]


class MessageEvent(NamedTuple):
    """What one signal says of one message (or, for a message sent to some recipients only, of those).

    A named tuple: immutable, hashable, and cheap to make (a frozen dataclass costs several times more, for
    every message of every batch).

    ``pk``
        The queue row's id (:class:`~mailer.models.Message`); ``None`` when queueing (rows are inserted in bulk,
        without reading their ids back) and for mail the don't-send list stopped at queueing.
    ``message_id``
        The ``Message-ID`` header, the same at every attempt: what links a queued event to the later ones
        (``None`` with ``MAILER_ADD_MESSAGE_ID = False`` when the email has none of its own).
    ``mailer``
        The ``MAILERS`` alias the message was queued through, or ``None``.
    ``priority``
        The message's priority (a ``mailer.models.PRIORITY_*`` value) when it was queued or claimed.
    ``recipients``
        The addresses (To, Cc and Bcc, lower-cased, without display names) this event is about.
    ``subject``
        The subject.
    ``error``
        Deferred and failed: the reason, on one line (the relay's reply, an exception's text, ``expired: ...``);
        otherwise ``""``.
    ``next_attempt``
        Deferred: when it is tried again (an aware ``datetime``), or ``None`` when it waits for
        ``retry_deferred``. Queued: its ``send_at``, or ``None`` to go at once. Otherwise ``None``.
    ``provider_message_id``
        Sent: the id the real backend's provider gave it, where the backend reports one (django-anymail).
    """

    pk: int | None
    message_id: str | None
    mailer: str | None
    priority: int
    recipients: tuple[str, ...]
    subject: str
    error: str = ""
    next_attempt: datetime.datetime | None = None
    provider_message_id: str | None = None


messages_queued = Signal()
"""Emails stored on the queue: one signal per :func:`mailer.send_mail`, ``send_mass_mail``... call or per
``DbBackend.send_messages()`` batch."""

messages_sent = Signal()
"""Messages a relay accepted (for some recipients, if it refused others)."""

messages_deferred = Signal()
"""Messages (or some of their recipients) left on the queue after a failed attempt, to be tried again."""

messages_failed = Signal()
"""Messages (or some of their recipients) given up: refused for good, out of attempts, expired, undecodable."""

messages_skipped = Signal()
"""Messages not sent because every one of their recipients is on the don't-send list (when queued or sent)."""
