"""What the admin's actions tell the user: the texts, and how they are reported (:func:`report`).

The texts are ``ngettext_lazy`` strings: the plural form is picked from the ``count`` value when the
message is shown, in the user's language.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext_lazy

from mailer.summaries import SendResult

RETRIED = ngettext_lazy(
    "%(count)d deferred message put back on the queue.", "%(count)d deferred messages put back on the queue.", "count"
)
MADE_DUE = ngettext_lazy(
    "%(count)d message waiting for a retry is due now.", "%(count)d messages waiting for a retry are due now.", "count"
)
NOT_DUE = ngettext_lazy(
    "%(count)d message not sent: it is waiting for a retry (retry it to send it now).",
    "%(count)d messages not sent: they are waiting for a retry (retry them to send them now).",
    "count",
)
NOT_YET = ngettext_lazy(
    "%(count)d message not sent: it is scheduled for later (send it now to make it due).",
    "%(count)d messages not sent: they are scheduled for later (send them now to make them due).",
    "count",
)
MADE_DUE_NOW = ngettext_lazy(
    "%(count)d scheduled or waiting message is due now: a sender takes it at its next pass.",
    "%(count)d scheduled or waiting messages are due now: senders take them at their next pass.",
    "count",
)
MAX_RETRIES_REACHED = ngettext_lazy(
    "%(count)d message stays deferred: it reached MAILER_EMAIL_MAX_RETRIES.",
    "%(count)d messages stay deferred: they reached MAILER_EMAIL_MAX_RETRIES.",
    "count",
)
MOVED = ngettext_lazy(
    "%(count)d message moved to %(priority)s priority.", "%(count)d messages moved to %(priority)s priority.", "count"
)
LEFT_DEFERRED = ngettext_lazy(
    "%(count)d deferred message left deferred: retry it first.",
    "%(count)d deferred messages left deferred: retry them first.",
    "count",
)
ADDED = ngettext_lazy(
    "%(count)d address added to the don't-send list.", "%(count)d addresses added to the don't-send list.", "count"
)
ALREADY_LISTED = ngettext_lazy(
    "%(count)d address was already on the list.", "%(count)d addresses were already on the list.", "count"
)
REQUEUED = ngettext_lazy("%(count)d message queued again.", "%(count)d messages queued again.", "count")
NOT_FAILURES = ngettext_lazy(
    "%(count)d entry skipped: not a failure.", "%(count)d entries skipped: not failures.", "count"
)
UNDECODABLE = ngettext_lazy(
    "%(count)d message skipped: its data is missing or can't be decoded.",
    "%(count)d messages skipped: their data is missing or can't be decoded.",
    "count",
)


SENT = ngettext_lazy("%(count)d message sent.", "%(count)d messages sent.", "count")
SENT_WITH_TROUBLE = ngettext_lazy(
    "%(count)d message sent, %(deferred)d deferred, %(failed)d failed.",
    "%(count)d messages sent, %(deferred)d deferred, %(failed)d failed.",
    "count",
)
SKIPPED = ngettext_lazy(
    "%(count)d message not sent: every recipient is on the don't-send list.",
    "%(count)d messages not sent: every recipient is on the don't-send list.",
    "count",
)
FIRST_ERROR_LENGTH = 300  # characters of the first error the report quotes; the log entry has it all


def report(
    modeladmin: admin.ModelAdmin, request: HttpRequest, text: Any, count: int, level: int | None = None, **values: Any
) -> None:
    """Tell the user what an action did; by default a success, or plain information when it did nothing."""
    if level is None:
        level = messages.SUCCESS if count else messages.INFO
    modeladmin.message_user(request, text % {"count": count, **values}, level)


def report_sent(modeladmin: admin.ModelAdmin, request: HttpRequest, result: SendResult) -> None:
    """What a sending pass started from the admin did: a warning, with the first error, if anything failed."""
    if not (result.deferred or result.failed):
        report(modeladmin, request, SENT, result.sent)
    else:
        text = SENT_WITH_TROUBLE % {"count": result.sent, "deferred": result.deferred, "failed": result.failed}
        if result.first_error:
            error = Truncator(" ".join(result.first_error.split())).chars(FIRST_ERROR_LENGTH)
            text = _("%(counts)s First error: %(error)s") % {"counts": text, "error": error}
        modeladmin.message_user(request, text, messages.WARNING)
    if result.skipped:
        report(modeladmin, request, SKIPPED, result.skipped, messages.INFO)
