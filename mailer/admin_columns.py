"""Columns of the admin's lists, read from the decoded email or from the retry fields.

Everything read from an email is escaped with :func:`~django.utils.html.escape`, which escapes
``SafeString`` too: a subject or body rendered by a template with autoescaping off (every plain-text
email template) is a ``SafeString`` holding whatever the user typed, and the admin would otherwise
show it as HTML.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import display_for_value
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from mailer.choices import Priority
from mailer.emailparts import addresses

UNAVAILABLE = _("<Message data unavailable>")
SHORT_MESSAGE_ID = 32  # characters of the Message-ID the log's list shows; the entry's page shows it all


class EmailColumnsMixin:
    """Columns read from the decoded email (decoded once per row: the models keep what they decoded)."""

    @admin.display(description=_("To"))
    def to(self, obj: Any) -> str:
        email = obj.email
        return escape(", ".join(addresses(email, "to"))) if email is not None else UNAVAILABLE

    @admin.display(description=_("Subject"))
    def subject(self, obj: Any) -> str:
        email = obj.email
        return escape(email.subject) if email is not None else UNAVAILABLE

    @admin.display(description=_("message id"), ordering="message_id")
    def message_id_short(self, obj: Any) -> str | None:
        """The start of the Message-ID (all of it on hover): the whole one would push the result off the screen."""
        if not obj.message_id:
            return None
        return format_html(
            '<span title="{}">{}</span>', obj.message_id, Truncator(obj.message_id).chars(SHORT_MESSAGE_ID)
        )


# How much of a message's last error the list shows; the change page shows it all.
SHORT_ERROR = 60


class RetryFieldsMixin:
    """Columns and fields of automatic retries and scheduling: failed attempts, when the message is due (its
    ``send_at`` or its next attempt), when it expires, the last error."""

    @admin.display(description=_("attempts"), ordering="attempts")
    def failed_attempts(self, obj):
        return obj.attempts or 0  # NULL: a row queued by an older version, never tried

    @admin.display(description=_("send at / next attempt"), ordering="not_before")
    def next_attempt(self, obj):
        """The send time or retry time while it is ahead; a message whose time has come is due now (unless
        deferred)."""
        if obj.priority == Priority.DEFERRED:
            return Priority.DEFERRED.label
        if obj.not_before is not None and obj.not_before > timezone.now():
            return display_for_value(obj.not_before, "")
        return _("due now")

    @admin.display(description=_("expires at"), ordering="expires_at")
    def expiry(self, obj: Any) -> str:
        """``expires_at``, marked when it has passed: the first sender that reaches the message logs it expired."""
        if obj.expires_at is None:
            return self.get_empty_value_display()  # "-" in the list and on the page (where None reads "None")
        shown = display_for_value(obj.expires_at, "")
        if obj.expires_at <= timezone.now():
            return format_html("{} ({})", shown, _("expired"))
        return shown

    @admin.display(description=_("last error"))
    def last_error_short(self, obj):
        """The start of the last error, all of it on hover; the change page shows it whole."""
        if not obj.last_error:
            return None  # the admin's empty value ("-") on every Django version; "" shows as "" on 4.2
        return format_html('<span title="{}">{}</span>', obj.last_error, Truncator(obj.last_error).chars(SHORT_ERROR))
