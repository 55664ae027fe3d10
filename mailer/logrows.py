"""The :class:`~mailer.models.MessageLog` row that records what happened to a message.

Every outcome is logged through :func:`log_fields`: the one ``MessageLog.objects.log()`` creates, the
rows a sender writes in bulk for its batch, and those queueing writes for mail the don't-send list
left without a recipient. What it takes from the email (its Message-ID, the id its provider gave it)
is cut and cleaned here, so that a value the log cannot store never fails the write of a batch.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any, Protocol

from django.core.mail import EmailMessage
from django.utils.timezone import now

from mailer import serialization, staging, standins
from mailer.choices import RESULT_FAILURE
from mailer.conf import mailer_settings
from mailer.message_ids import get_message_id
from mailer.searchcols import log_columns

# Text kept in the log is cut to these lengths (in characters): at four bytes each, they fit MySQL's TEXT.
MESSAGE_ID_LENGTH = 998  # a header line's limit (RFC 5322)
LOG_MESSAGE_LENGTH = 16000
PROVIDER_ID_LENGTH = 255  # MessageLog.provider_message_id's max_length


class Queued(Protocol):
    """What a log row takes from the queued message (a :class:`~mailer.models.Message`)."""

    message_data: str
    when_added: datetime.datetime
    priority: int
    mailer: str | None


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
    return storable(ids, PROVIDER_ID_LENGTH)


def log_fields(message: Queued, email: EmailMessage | None, result_code: str, log_message: str = "") -> dict:
    """The field values of a :class:`~mailer.models.MessageLog` row for ``message``.

    ``email`` is the message as it is now (with the Message-ID and any header
    the backend added); it is kept unless ``MAILER_EMAIL_LOG_MESSAGE_DATA``
    is false. Without an email, the queued data is kept as it is.
    """
    if not mailer_settings.EMAIL_LOG_MESSAGE_DATA:
        data = None
    elif email is None:
        data = message.message_data
    else:
        data = serialization.dumps(email)
    note = standins.note_for(email)
    if note:
        log_message = f"{note}\n{log_message}" if log_message else note
    redirected = staging.note_for(email)  # after the reason: a failure's first line stays its reason
    if redirected:
        log_message = f"{log_message}\n{redirected}" if log_message else redirected
    message_id = provider_id = None
    if email is not None:
        message_id = storable(get_message_id(email), MESSAGE_ID_LENGTH)
        provider_id = get_provider_message_id(email)
    fields = log_columns(email)
    fields.update(
        message_data=data,
        message_id=message_id,
        provider_message_id=provider_id,
        when_added=message.when_added,
        when_attempted=now(),
        priority=message.priority,
        result=result_code,
        log_message=storable(log_message, LOG_MESSAGE_LENGTH) if log_message else "",
        mailer=message.mailer,
    )
    return fields


def storable(value: Any, limit: int | None = None) -> str | None:
    """``value`` as text every database takes: a plain ``str`` (lazy text and UUIDs forced), no NUL, cut to ``limit``.

    A value the log cannot store makes the whole batch's outcome write fail; what
    went out must be recorded whatever the sender put in a header.
    """
    if type(value) is str and (limit is None or len(value) <= limit) and "\x00" not in value:
        return value  # nearly every value: nothing to do
    if value is None:
        return None
    text = str(value)
    if type(text) is not str:  # SafeString and other subclasses: the drivers want the plain type
        text = str.__str__(text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text[:limit] if limit is not None and len(text) > limit else text


def failure_text(logs: Iterable[dict]) -> str:
    """The reason in the first failure log row of ``logs``, on one line: its first line, or the last line
    of a traceback (``ValueError: boom``)."""
    for row in logs:
        if row["result"] == RESULT_FAILURE:
            lines = [line.strip() for line in row["log_message"].splitlines() if line.strip()]
            if lines:
                return lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return ""
