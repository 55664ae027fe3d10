"""The queue (:class:`Message`), the log (:class:`MessageLog`) and the don't-send list.

Also django-mailer 2.x's helpers that build a :class:`Message` for the caller to save,
:func:`make_message` and :func:`filter_recipient_list`. How each model is asked and changed (its
manager) is in :mod:`mailer.managers`; the log row that records a message's outcome, in :mod:`mailer.logrows`.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.core.mail import EmailMessage
from django.db import models, router
from django.utils.timezone import now
from django.utils.timezone import now as datetime_now  # the 2.x name: test suites patch it to move time
from django.utils.translation import gettext_lazy as _

from mailer import row_size, serialization, storage
from mailer.addresses import address_key, entry_key
from mailer.bounce_models import EventFields, SoftBounce, address_digest
from mailer.choices import (  # the 2.x names of the vocabulary, kept importable from here
    PRIORITIES,
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MAPPING,
    PRIORITY_MEDIUM,
    RESULT_CODES,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    Priority,
    Result,
    get_priority,
)
from mailer.fields import MessageDataField
from mailer.logrows import PROVIDER_ID_LENGTH, get_provider_message_id
from mailer.managers import DontSendEntryManager, MessageLogManager, MessageManager
from mailer.message_ids import get_message_id, with_message_id
from mailer.recipients import LogRecipient
from mailer.scheduling import checked_schedule
from mailer.searchcols import RECIPIENT_INDEX, first_recipient_field, recipients_field, search_columns, subject_field
from mailer.sender_models import DrainChain, SenderHeartbeat
from mailer.validation import validate

logger = logging.getLogger(__name__)


def email_to_db(obj: Any) -> str:
    """Serialise an email (or any picklable object) for ``message_data``."""
    return serialization.dumps(obj)


def db_to_email(data: str | bytes | None) -> Any:
    """Decode ``message_data``; ``None`` when it is empty or cannot be decoded."""
    if not data:
        return None
    try:
        return serialization.loads(data)
    except serialization.UndecodableMessage as exc:
        logger.warning("Cannot decode message data: %s", exc)
        return None


def _decoded(obj: Message | MessageLog) -> EmailMessage | None:
    """What ``obj.message_data`` decodes to, decoded once for as long as ``message_data`` stays the same."""
    data = obj.message_data
    cached = obj.__dict__.get("_email_cache")
    if cached is not None and cached[0] is data:
        return cached[1]
    email = db_to_email(data)
    obj._email_cache = (data, email)
    return email


QUEUE_INDEX = "mailer_message_queue_idx"  # what senders claim the queue by (migration 0008)
WAITING_INDEX = "mailer_message_waiting_idx"  # messages waiting for a later attempt (migration 0013)
RESERVATION_INDEX = "mailer_reservation_window_idx"  # a relay's rate reservations by time (migration 0015)


def _mailer_field(help_text: str) -> models.CharField:
    return models.CharField(_("mailer"), max_length=100, null=True, blank=True, help_text=help_text)


class Message(models.Model):
    """An email waiting to be sent."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    message_data = MessageDataField()
    when_added = models.DateTimeField(_("when added"), default=now)
    priority = models.PositiveSmallIntegerField(_("priority"), choices=Priority.choices, default=Priority.MEDIUM.value)
    retry_count = models.IntegerField(_("retry count"), default=0)
    # NULL, not "", for rows queued without an alias: processes still running
    # django-mailer 2.x during an upgrade insert rows without this column.
    mailer = _mailer_field(_("The MAILERS alias the message was queued through; it decides which mailer sends it."))
    # Automatic retries (migration 0013). Nullable for the same reason: NULL means due now, and no attempt yet.
    not_before = models.DateTimeField(
        _("not before"),
        null=True,
        blank=True,
        help_text=_("The message is not handed to a mailer before this time: its next attempt after a failure."),
    )
    attempts = models.PositiveIntegerField(
        _("attempts"), null=True, blank=True, default=0, help_text=_("Failed delivery attempts so far.")
    )
    last_error = models.TextField(
        _("last error"), null=True, blank=True, help_text=_("Why the last attempt failed, as the mailer said it.")
    )
    # Scheduling (migration 0014; send_at is stored in not_before). Nullable, as above: NULL never expires.
    expires_at = models.DateTimeField(
        _("expires at"),
        null=True,
        blank=True,
        help_text=_("The message is not sent after this time: a sender that reaches it later logs it as expired."),
    )
    # What the admin searches (migration 0016, mailer.searchcols). NULL: not filled yet (mailer.searchfill).
    recipients = recipients_field()
    subject_text = subject_field()

    objects = MessageManager()

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        # Also WAITING_INDEX, partial, where the database has partial indexes: made by migration 0013.
        indexes = [models.Index(fields=["priority", "when_added", "id"], name=QUEUE_INDEX)]

    def __str__(self) -> str:
        try:
            email = self.email
            return f'On {self.when_added}, "{email.subject}" to {", ".join(email.to)}'
        except Exception:
            return "<Message repr unavailable>"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        return storage.delete_with_files(self, super().delete, *args, **kwargs)

    @property
    def email(self) -> EmailMessage | None:
        """The queued ``EmailMessage``; ``None`` when the data cannot be decoded.

        The decoded object is kept until ``message_data`` changes, so reading
        this property repeatedly decodes once. After changing the returned
        object, assign it back to store the change.
        """
        return _decoded(self)

    @email.setter
    def email(self, value: EmailMessage) -> None:
        data = email_to_db(value)
        self.message_data = data
        self._email_cache = (data, value)
        columns = search_columns(value)
        self.recipients, self.subject_text = columns["recipients"], columns["subject_text"]

    def remember_email(self, email: EmailMessage | None) -> None:
        """Keep ``email`` as what the current ``message_data`` decodes to (``None``: forget it).

        For code that decodes the data itself (the sender, a claim at a time):
        :attr:`email` then returns it without decoding again.
        """
        if email is None:
            self.__dict__.pop("_email_cache", None)
        else:
            self._email_cache = (self.message_data, email)

    @property
    def to_addresses(self) -> list[str]:
        email = self.email
        return list(email.to) if email is not None else []

    @property
    def subject(self) -> str:
        email = self.email
        return email.subject if email is not None else ""

    def defer(self) -> None:
        """Take the message out of the queue until ``retry_deferred`` runs.

        The rows form, for messages known by their key: :meth:`~mailer.managers.MessageQuerySet.mark_deferred`.
        """
        self.priority = Priority.DEFERRED.value
        self.save(update_fields=["priority"])


class DontSendEntry(EventFields, models.Model):
    """An address that must not receive mail; with the delivery event that added it, if one did."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    to_address = models.EmailField(_("to address"), max_length=254)
    when_added = models.DateTimeField(_("when added"), default=now)

    objects = DontSendEntryManager()

    class Meta:
        verbose_name = _("don't send entry")
        verbose_name_plural = _("don't send entries")

    def __str__(self) -> str:
        return self.to_address

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Stored as the list compares it: "Ann <ÄNN@x.org>" and " änn@x.org " become "änn@x.org".
        self.to_address = entry_key(self.to_address)
        if self.address_digest and self.address_digest != address_digest(self.to_address):
            self.address_digest = None  # the address changed: the entry no longer stands for the one it was added for
        super().save(*args, **kwargs)


class MessageLog(models.Model):
    """What happened to a message that left the queue (or failed to)."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    message_data = MessageDataField(null=True)
    message_id = models.TextField(_("message id"), editable=False, null=True)
    provider_message_id = models.CharField(
        _("provider message id"),
        max_length=PROVIDER_ID_LENGTH,
        null=True,
        blank=True,
        db_index=True,
        editable=False,
        help_text=_("The id the sending provider gave the message (django-anymail's anymail_status)."),
    )
    when_added = models.DateTimeField(_("when added"), db_index=True)
    priority = models.PositiveSmallIntegerField(_("priority"), choices=Priority.choices, db_index=True)
    when_attempted = models.DateTimeField(_("when attempted"), default=now)
    result = models.CharField(_("result"), max_length=1, choices=Result.choices)
    log_message = models.TextField(_("log message"))
    mailer = _mailer_field(_("The MAILERS alias the message was queued through."))
    # As the queue's; a search by address reads the index of the first address, and LogRecipient for the others.
    recipients = recipients_field()
    subject_text = subject_field()
    recipient = first_recipient_field()

    objects = MessageLogManager()

    class Meta:
        verbose_name = _("message log")
        verbose_name_plural = _("message logs")
        indexes = [models.Index(fields=["recipient"], name=RECIPIENT_INDEX)]

    def __str__(self) -> str:
        try:
            email = self.email
            if email is not None:
                return f'On {self.when_attempted}, "{email.subject}" to {", ".join(email.to)}'
            return f'On {self.when_attempted}, "{self.message_id}"'
        except Exception:
            return "<MessageLog repr unavailable>"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        return storage.delete_with_files(self, super().delete, *args, **kwargs)

    @property
    def email(self) -> EmailMessage | None:
        """The logged ``EmailMessage``; ``None`` without data or when it cannot be decoded (decoded once)."""
        return _decoded(self)

    @property
    def to_addresses(self) -> list[str] | None:
        email = self.email
        return list(email.to) if email is not None else None

    @property
    def subject(self) -> str | None:
        email = self.email
        return email.subject if email is not None else None


class RelayState(models.Model):
    """One row per relay with rate limits: its row lock orders the relay's reservations (:mod:`mailer.ratelimits`).

    ``paused_until`` and ``pause_seconds``: the pause every sender keeps after the relay asked to slow down.
    ``windows``: ``{"<seconds>": [tokens, edge]}``, the tokens reserved after each window's edge.
    """

    relay = models.CharField(_("relay"), max_length=100, unique=True)
    paused_until = models.DateTimeField(_("paused until"), null=True, blank=True)
    pause_seconds = models.FloatField(_("pause seconds"), null=True, blank=True)
    # The latest reservation's time, and the running sums of the windows (see mailer.ratewindows).
    last_at = models.DateTimeField(_("last reservation"), null=True, blank=True)
    windows = models.JSONField(_("windows"), null=True, blank=True)

    class Meta:
        verbose_name = _("relay state")
        verbose_name_plural = _("relay states")

    def __str__(self) -> str:
        return self.relay


class RateReservation(models.Model):
    """``count`` deliveries to ``relay`` that a sender was allowed at ``at`` (see :mod:`mailer.ratelimits`)."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    relay = models.CharField(_("relay"), max_length=100)
    at = models.DateTimeField(_("at"))
    count = models.PositiveIntegerField(_("count"))

    class Meta:
        verbose_name = _("rate reservation")
        verbose_name_plural = _("rate reservations")
        # The window sums and the walk for retry_at are range scans of one relay's rows by time; with the
        # count in the index too, the sums read the index alone.
        indexes = [models.Index(fields=["relay", "at", "count"], name=RESERVATION_INDEX)]

    def __str__(self) -> str:
        return f"{self.count} to {self.relay} at {self.at}"


def filter_recipient_list(lst: list[str] | None) -> list[str] | None:
    """``lst`` without the addresses on the don't-send list (one query)."""
    if lst is None:
        return None
    blocked = DontSendEntry.objects.blocked_addresses(lst, queueing=True)
    if not blocked:
        return list(lst)
    return [address for address in lst if address_key(address) not in blocked]


def make_message(
    subject: str = "",
    body: str = "",
    from_email: str | None = None,
    to: list[str] | None = None,
    bcc: list[str] | None = None,
    attachments: list | None = None,
    headers: dict | None = None,
    priority: Any = None,
    *,
    send_at: datetime.datetime | None = None,
    expires_at: datetime.datetime | None = None,
) -> Message:
    """An unsaved :class:`Message` for these parameters, to and bcc filtered.

    Call ``save()`` on it when it is ready to be queued. The don't-send list is
    applied again when the message is sent. The email gets its Message-ID now
    (unless ``headers`` has one, or ``MAILER_ADD_MESSAGE_ID`` is False), as
    mail queued any other way does. ``send_at`` and ``expires_at`` schedule
    it (see :mod:`mailer.scheduling`); they are checked here, before anything
    else, as queueing checks them.
    """
    send_at, expires_at = checked_schedule(send_at, expires_at)
    email = EmailMessage(
        subject=subject,
        body=body,
        from_email=from_email,
        to=filter_recipient_list(to),
        bcc=filter_recipient_list(bcc),
        attachments=attachments,
        headers=headers,
    )
    validate(email)
    message = Message(priority=get_priority(priority), not_before=send_at, expires_at=expires_at)
    message.email = with_message_id(email)
    row_size.check_message_size([(message.message_data, [])])
    row_size.check([message.message_data], router.db_for_write(Message, instance=message))
    return message


__all__ = [
    "Priority",
    "Result",
    "PRIORITY_HIGH",
    "PRIORITY_MEDIUM",
    "PRIORITY_LOW",
    "PRIORITY_DEFERRED",
    "PRIORITIES",
    "PRIORITY_MAPPING",
    "RESULT_SUCCESS",
    "RESULT_DONT_SEND",
    "RESULT_FAILURE",
    "RESULT_CODES",
    "Message",
    "MessageLog",
    "DontSendEntry",
    "RelayState",
    "RateReservation",
    "LogRecipient",
    "SenderHeartbeat",
    "DrainChain",
    "SoftBounce",
    "datetime_now",
    "email_to_db",
    "db_to_email",
    "get_message_id",
    "get_provider_message_id",
    "make_message",
    "filter_recipient_list",
]
