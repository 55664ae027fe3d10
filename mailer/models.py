"""The queue (:class:`Message`), the log (:class:`MessageLog`) and the don't-send list."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from typing import Any

from django.core.mail import EmailMessage
from django.db import models
from django.db.models.functions import Lower
from django.dispatch import Signal
from django.utils.timezone import now
from django.utils.translation import gettext_lazy as _

from mailer import serialization
from mailer.addresses import entry_key
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
)
from mailer.conf import mailer_settings

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


def get_provider_message_id(email: EmailMessage) -> str | None:
    """The id the real backend's provider gave ``email``, if it reports one.

    django-anymail sets ``email.anymail_status.message_id`` after sending: one
    id, or a set of them when the provider gave each recipient its own.
    """
    ids = getattr(getattr(email, "anymail_status", None), "message_id", None)
    if ids is None:
        return None
    if isinstance(ids, (set, frozenset, list, tuple)):
        ids = ", ".join(sorted(map(str, ids)))
    return str(ids)[:PROVIDER_ID_LENGTH]


def get_message_id(email: EmailMessage) -> str | None:
    """The email's Message-ID header, whatever the case of its name."""
    for key, value in email.extra_headers.items():
        if key.lower() == "message-id":
            return value
    return None


QUEUE_INDEX = "mailer_message_queue_idx"  # what senders claim the queue by (migration 0008)
PROVIDER_ID_LENGTH = 255


class MessageDataField(models.TextField):
    """The text column that holds a serialised email.

    Having ``get_placeholder()`` makes Django's PostgreSQL backend insert many
    rows with a plain ``VALUES`` list instead of ``UNNEST`` over arrays, which
    psycopg builds by scanning every value, several kilobytes here, with a
    regular expression: a sixth of a sending run's time. No change to the
    column itself.
    """

    def get_placeholder(self, value: Any, compiler: Any, connection: Any) -> str:  # before Django 6.1
        return "%s"

    def get_placeholder_sql(self, value: Any, compiler: Any, connection: Any) -> tuple[str, tuple]:  # 6.1+
        if hasattr(value, "as_sql"):
            return compiler.compile(value)
        return "%s", (value,)

    def deconstruct(self) -> tuple:
        # A TextField to migrations: the database sees no difference.
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.TextField", args, kwargs


def _mailer_field(help_text: str) -> models.CharField:
    return models.CharField(_("mailer"), max_length=100, null=True, blank=True, help_text=help_text)


class MessageQuerySet(models.QuerySet):
    def high_priority(self) -> MessageQuerySet:
        return self.filter(priority=Priority.HIGH)

    def medium_priority(self) -> MessageQuerySet:
        return self.filter(priority=Priority.MEDIUM)

    def low_priority(self) -> MessageQuerySet:
        return self.filter(priority=Priority.LOW)

    def non_deferred(self) -> MessageQuerySet:
        return self.exclude(priority=Priority.DEFERRED)

    def deferred(self) -> MessageQuerySet:
        return self.filter(priority=Priority.DEFERRED)

    def retryable(self) -> MessageQuerySet:
        """The deferred messages that retrying puts back on the queue.

        The retry limit's one home (``retry_deferred()``, the ``retry_deferred``
        command and the admin action all ask here): with
        ``MAILER_EMAIL_MAX_RETRIES`` set, a message already retried that many
        times stays deferred; without it, every deferred message is retryable.
        """
        return self.deferred().exclude(_retries_used_up())

    def retries_used_up(self) -> MessageQuerySet:
        """The deferred messages that stay deferred: the rest of :meth:`deferred` after :meth:`retryable`."""
        return self.deferred().filter(_retries_used_up())

    def retry_deferred(self, new_priority: int = Priority.MEDIUM.value) -> int:
        """Put the :meth:`retryable` messages back on the queue, counting the retry; return how many."""
        return self.retryable().update(priority=new_priority, retry_count=models.F("retry_count") + 1)


def _retries_used_up() -> models.Q:
    """Messages retried ``MAILER_EMAIL_MAX_RETRIES`` times; none when the setting is ``None`` (no limit)."""
    max_retries = mailer_settings.EMAIL_MAX_RETRIES
    if max_retries is None:
        return models.Q(pk__in=[])
    return models.Q(retry_count__gte=max_retries)


class MessageManager(models.Manager.from_queryset(MessageQuerySet)):
    pass


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

    objects = MessageManager()

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        indexes = [models.Index(fields=["priority", "when_added", "id"], name=QUEUE_INDEX)]

    def __str__(self) -> str:
        try:
            email = self.email
            return f'On {self.when_added}, "{email.subject}" to {", ".join(email.to)}'
        except Exception:
            return "<Message repr unavailable>"

    @property
    def email(self) -> EmailMessage | None:
        """The queued ``EmailMessage``; ``None`` when the data cannot be decoded.

        The decoded object is kept until ``message_data`` changes, so reading
        this property repeatedly decodes once. After changing the returned
        object, assign it back to store the change.
        """
        data = self.message_data
        cached = self.__dict__.get("_email_cache")
        if cached is not None and cached[0] is data:
            return cached[1]
        email = db_to_email(data)
        self._email_cache = (data, email)
        return email

    @email.setter
    def email(self, value: EmailMessage) -> None:
        data = email_to_db(value)
        self.message_data = data
        self._email_cache = (data, value)

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
        """Take the message out of the queue until ``retry_deferred`` runs."""
        self.priority = Priority.DEFERRED.value
        self.save(update_fields=["priority"])


# Sent after changes to the don't-send list that send no post_save (``bulk_create``).
dont_send_list_changed = Signal()


class DontSendEntryManager(models.Manager):
    def has_address(self, address: str) -> bool:
        """Is ``address`` (bare or with a display name) on the don't-send list? Case does not matter."""
        key = entry_key(address)
        return bool(key) and key in self.keys_on_list([key])

    def keys_on_list(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` (from :func:`~mailer.addresses.address_key`) that are on the list.

        Entries are stored folded by Python (see :meth:`DontSendEntry.save`); ``LOWER()`` on the
        column also folds the ASCII letters of rows written as given (by django-mailer 2.x, or by an
        ``update()``) and uses the index of migration 0010. What the database returns is compared
        again here: a collation that ignores accents (MariaDB's default) would match "ann" with "änn".
        """
        keys = set(keys)
        found = self.annotate(key=Lower("to_address")).filter(key__in=keys).values_list("key", flat=True)
        return keys.intersection(found)

    def bulk_create(self, objs: Iterable[DontSendEntry], *args: Any, **kwargs: Any) -> list[DontSendEntry]:
        objs = list(objs)
        for obj in objs:
            obj.to_address = entry_key(obj.to_address)
        created = super().bulk_create(objs, *args, **kwargs)
        dont_send_list_changed.send(sender=self.model)
        return created


class DontSendEntry(models.Model):
    """An address that must not receive mail."""

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
        super().save(*args, **kwargs)


class MessageLogManager(models.Manager):
    def log(self, message: Message, result_code: str, log_message: str = "") -> MessageLog:
        """Record the outcome of an attempt to send ``message``."""
        return self.create(**log_fields(message, message.email, result_code, log_message))

    def purge_old_entries(self, days: int, result_codes: Iterable[str] | None = None) -> int:
        """Delete entries older than ``days`` days with these results (default: success)."""
        if result_codes is None:
            result_codes = [Result.SUCCESS.value]
        limit = now() - datetime.timedelta(days=days)
        deleted, _per_model = self.filter(when_attempted__lt=limit, result__in=list(result_codes)).delete()
        return deleted


def log_fields(message: Message, email: EmailMessage | None, result_code: str, log_message: str = "") -> dict:
    """The field values of a :class:`MessageLog` row for ``message``.

    ``email`` is the message as it is now (with the Message-ID and any header
    the backend added); it is kept unless ``MAILER_EMAIL_LOG_MESSAGE_DATA``
    is false. Without an email, the queued data is kept as it is.
    """
    if not mailer_settings.EMAIL_LOG_MESSAGE_DATA:
        data = None
    elif email is None:
        data = message.message_data
    else:
        data = email_to_db(email)
    return {
        "message_data": data,
        "message_id": _storable(get_message_id(email), MESSAGE_ID_LENGTH) if email is not None else None,
        "provider_message_id": _storable(get_provider_message_id(email)) if email is not None else None,
        "when_added": message.when_added,
        "when_attempted": now(),
        "priority": message.priority,
        "result": result_code,
        "log_message": _storable(log_message, LOG_MESSAGE_LENGTH),
        "mailer": message.mailer,
    }


# Text kept in the log is cut to these lengths (in characters): at four bytes each, they fit MySQL's TEXT.
MESSAGE_ID_LENGTH = 998  # a header line's limit (RFC 5322)
LOG_MESSAGE_LENGTH = 16000


def _storable(value: Any, limit: int | None = None) -> str | None:
    """``value`` as text every database takes: a plain ``str`` (lazy text and UUIDs forced), no NUL, cut to ``limit``.

    A value the log cannot store makes the whole batch's outcome write fail; what
    went out must be recorded whatever the sender put in a header.
    """
    if value is None:
        return None
    text = str(value)
    if type(text) is not str:  # SafeString and other subclasses: the drivers want the plain type
        text = str.__str__(text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text[:limit] if limit is not None and len(text) > limit else text


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

    objects = MessageLogManager()

    class Meta:
        verbose_name = _("message log")
        verbose_name_plural = _("message logs")

    def __str__(self) -> str:
        try:
            email = self.email
            if email is not None:
                return f'On {self.when_attempted}, "{email.subject}" to {", ".join(email.to)}'
            return f'On {self.when_attempted}, "{self.message_id}"'
        except Exception:
            return "<MessageLog repr unavailable>"

    @property
    def email(self) -> EmailMessage | None:
        return db_to_email(self.message_data)

    @property
    def to_addresses(self) -> list[str] | None:
        email = self.email
        return list(email.to) if email is not None else None

    @property
    def subject(self) -> str | None:
        email = self.email
        return email.subject if email is not None else None


def __getattr__(name: str) -> Any:
    # django-mailer 2.x exported these from mailer.models; they live in
    # mailer.enqueue, which imports this module, hence the late lookup.
    if name in ("make_message", "filter_recipient_list"):
        from mailer import enqueue

        return getattr(enqueue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "email_to_db",
    "db_to_email",
    "get_message_id",
    "get_provider_message_id",
]
