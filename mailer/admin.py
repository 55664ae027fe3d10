"""Admin pages for the queue, the log and the don't-send list.

The serialised ``message_data`` is never shown as an editable field: the
pages show what it decodes to (recipients, subject, plain text body).

Everything read from an email is escaped with :func:`~django.utils.html.escape`,
which escapes ``SafeString`` too: a subject or body rendered by a template with
autoescaping off (every plain-text email template) is a ``SafeString`` holding
whatever the user typed, and the admin would otherwise show it as HTML.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.db.models import Count, Q
from django.template.defaultfilters import linebreaksbr
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy

from mailer import bounces, postgres, ratelimits
from mailer.addresses import address_key
from mailer.admin_filters import ExpiryFilter, StateFilter
from mailer.choices import Priority, Result
from mailer.engine import send_all
from mailer.models import DontSendEntry, Message, MessageLog, RelayState

UNAVAILABLE = _("<Message data unavailable>")

# What the actions report: ngettext_lazy picks the plural form from the "count" value.
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


def report(modeladmin, request, text, count, level=None, **values):
    """Tell the user what an action did; by default a success, or plain information when it did nothing."""
    if level is None:
        level = messages.SUCCESS if count else messages.INFO
    modeladmin.message_user(request, text % {"count": count, **values}, level)


def search(queryset, term):
    """The queue's and the log's search (their querysets' ``search()``); it never returns a row twice."""
    return queryset.search(term), False


class EmailFieldsMixin:
    """Columns and fields read from the decoded email."""

    @admin.display(description=_("To"))
    def to(self, obj):
        email = obj.email
        return escape(", ".join(map(str, email.to))) if email is not None else UNAVAILABLE

    @admin.display(description=_("Subject"))
    def subject(self, obj):
        email = obj.email
        return escape(email.subject) if email is not None else UNAVAILABLE

    @admin.display(description=_("Plain text body"))
    def plain_text_body(self, obj):
        email = obj.email
        # escape() first: the admin's own escaping and linebreaksbr both trust a SafeString.
        return linebreaksbr(escape(email.body)) if email is not None else _("<Can't decode>")


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
    def expiry(self, obj):
        """``expires_at``, marked when it has passed: the first sender that reaches the message logs it expired."""
        if obj.expires_at is None:
            return None
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


@admin.register(Message)
class MessageAdmin(RetryFieldsMixin, EmailFieldsMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "to",
        "subject",
        "when_added",
        "priority",
        "retry_count",
        "failed_attempts",
        "next_attempt",
        "expiry",
        "last_error_short",
        "mailer",
    ]
    list_filter = [StateFilter, ExpiryFilter, "priority", "when_added", "mailer"]
    date_hierarchy = "when_added"
    search_fields = ["recipients", "subject_text"]  # shows the search box; the search is Message.objects.search()
    search_help_text = _("An address (To, Cc or Bcc, any case), or words of the subject or of the recipients.")
    fields = [
        "to",
        "subject",
        "priority",
        "mailer",
        "when_added",
        "retry_count",
        "failed_attempts",
        "next_attempt",
        "expiry",
        "last_error",
        "plain_text_body",
    ]
    readonly_fields = [name for name in fields if name != "priority"]  # the priority is the one thing to change
    actions = ["send_messages", "send_now", "retry_deferred", "move_to_high", "move_to_low", "add_to_dont_send"]

    def has_add_permission(self, request):
        # Mail is queued through Django's mail functions, not typed in here.
        return False

    def get_search_results(self, request, queryset, search_term):
        return search(queryset, search_term)

    def has_add_to_dont_send_permission(self, request):
        return request.user.has_perm("mailer.add_dontsendentry")

    def changelist_view(self, request, extra_context=None):
        context = {
            "priority_counts": self.priority_counts(request),
            "paused_relays": sorted(ratelimits.pauses().items()),
        }
        return super().changelist_view(request, {**(extra_context or {}), **context})

    def priority_counts(self, request):
        """[(label, count, changelist query string)] for each priority and the whole queue, in one query."""
        counts = self.get_queryset(request).aggregate(
            total=Count("pk"), **{f"p{p.value}": Count("pk", filter=Q(priority=p)) for p in Priority}
        )
        rows = [(p.label, counts[f"p{p.value}"], f"?priority__exact={p.value}") for p in Priority]
        return [*rows, (_("total"), counts["total"], "?")]

    @admin.action(description=_("Send selected messages"), permissions=["change"])
    def send_messages(self, request, queryset):
        # Senders leave waiting messages until their time: so does this action.
        not_due, not_yet = queryset.waiting_for_retry().count(), queryset.scheduled().count()
        result = send_all(queryset)
        if result is None:
            self.message_user(request, _("Another sender is running; nothing was sent."), messages.WARNING)
            return
        self.message_user(
            request,
            ngettext("%(count)d message sent.", "%(count)d messages sent.", result.sent) % {"count": result.sent},
            messages.SUCCESS if result.sent else messages.INFO,
        )
        if not_due:
            report(self, request, NOT_DUE, not_due, messages.WARNING)
        if not_yet:
            report(self, request, NOT_YET, not_yet, messages.WARNING)

    @admin.action(
        description=_("Send selected messages now (scheduled or waiting for a retry)"), permissions=["change"]
    )
    def send_now(self, request, queryset):
        """Make the selected scheduled or waiting messages due at once (``make_due()``); the senders send them."""
        made_due = queryset.make_due()
        if made_due:
            postgres.wake_senders()  # runmailer_pg sends them at once, not at its next heartbeat
        report(self, request, MADE_DUE_NOW, made_due)
        deferred = queryset.deferred().count()
        if deferred:
            report(self, request, LEFT_DEFERRED, deferred, messages.WARNING)

    @admin.action(description=_("Retry selected deferred messages"), permissions=["change"])
    def retry_deferred(self, request, queryset):
        """As ``retry_deferred`` does: deferred messages go back on the queue, waiting ones are due now."""
        made_due = queryset.waiting_for_retry().update(not_before=None)
        retried = queryset.retry_deferred()  # the deferred ones: those waiting are due now already
        if made_due:
            report(self, request, MADE_DUE, made_due)
        if retried or not made_due:
            report(self, request, RETRIED, retried)
        stay = queryset.retries_used_up().count()
        if stay:
            report(self, request, MAX_RETRIES_REACHED, stay, messages.WARNING)

    @admin.action(description=_("Move selected messages to high priority"), permissions=["change"])
    def move_to_high(self, request, queryset):
        self.move(request, queryset, Priority.HIGH)

    @admin.action(description=_("Move selected messages to low priority"), permissions=["change"])
    def move_to_low(self, request, queryset):
        self.move(request, queryset, Priority.LOW)

    def move(self, request, queryset, priority: Priority):
        """Change the priority of the queued messages; deferred ones stay deferred (retrying is its own action)."""
        skipped = queryset.deferred().count()
        moved = queryset.non_deferred().update(priority=priority)
        report(self, request, MOVED, moved, priority=priority.label)
        if skipped:
            report(self, request, LEFT_DEFERRED, skipped, messages.WARNING)

    @admin.action(description=_("Add recipients to the don't-send list"), permissions=["add_to_dont_send"])
    def add_to_dont_send(self, request, queryset):
        addresses, undecodable = set(), 0
        for message in queryset.iterator():
            email = message.email
            if email is None:
                undecodable += 1
                continue
            addresses.update(address_key(a) for a in [*email.to, *email.cc, *email.bcc])
        addresses.discard("")
        new = sorted(addresses - DontSendEntry.objects.blocked_addresses(addresses))  # it ignores case
        now = timezone.now()
        DontSendEntry.objects.bulk_create([DontSendEntry(to_address=a, when_added=now) for a in new])
        report(self, request, ADDED, len(new))
        if len(addresses) > len(new):
            report(self, request, ALREADY_LISTED, len(addresses) - len(new), messages.INFO)
        if undecodable:
            report(self, request, UNDECODABLE, undecodable, messages.WARNING)


@admin.register(DontSendEntry)
class DontSendEntryAdmin(admin.ModelAdmin):
    """Entries and, for those a delivery event added (:mod:`mailer.bounces`), why and from which ESP event."""

    list_display = ["to_address", "when_added", "reason", "esp_name"]
    list_filter = ["reason"]
    search_fields = ["to_address"]
    fields = [
        "to_address",
        "when_added",
        "reason",
        "esp_name",
        "event_id",
        "event_at",
        "provider_message_id",
        "message_log",
        "detail",
    ]
    readonly_fields = fields[2:]  # what the event said: recorded, not edited

    @admin.display(description=_("message log"))
    def message_log(self, obj):
        """A link to the log row of the message that bounced, while the log keeps it."""
        log = bounces.message_log(obj) if obj.pk else None
        if log is None:
            return None
        url = reverse("admin:mailer_messagelog_change", args=[log.pk])
        return format_html('<a href="{}">{}</a>', url, log)


@admin.register(MessageLog)
class MessageLogAdmin(EmailFieldsMixin, admin.ModelAdmin):
    list_display = ["id", "to", "subject", "message_id", "when_attempted", "result", "mailer"]
    list_filter = ["result", "when_attempted", "mailer"]
    date_hierarchy = "when_attempted"
    search_fields = ["recipients", "subject_text", "message_id", "=provider_message_id"]  # shown; see below
    search_help_text = _(
        "An address (To, Cc or Bcc, any case), or words of the subject, of the recipients or of the Message-ID."
    )
    show_full_result_count = False  # a search's page does not count the whole log as well
    fields = [
        "to",
        "subject",
        "message_id",
        "provider_message_id",
        "priority",
        "mailer",
        "when_added",
        "when_attempted",
        "result",
        "log_message",
        "plain_text_body",
    ]
    readonly_fields = fields
    actions = ["requeue"]

    def has_add_permission(self, request):
        return False

    def get_search_results(self, request, queryset, search_term):
        return search(queryset, search_term)

    def has_requeue_permission(self, request):
        # The log stays as it is; requeueing adds to the queue.
        return request.user.has_perm("mailer.add_message")

    @admin.action(description=_("Requeue selected failed messages"), permissions=["requeue"])
    def requeue(self, request, queryset):
        """Queue a new copy of each selected failure; the log rows stay."""
        copies, undecodable = [], 0
        for log in queryset.filter(result=Result.FAILURE).iterator():
            if log.email is None:
                undecodable += 1
                continue
            priority = Priority.MEDIUM.value if log.priority == Priority.DEFERRED else log.priority
            copies.append(
                Message(
                    message_data=log.message_data,
                    priority=priority,
                    mailer=log.mailer,
                    recipients=log.recipients,
                    subject_text=log.subject_text,
                )
            )
        Message.objects.bulk_create(copies)
        report(self, request, REQUEUED, len(copies))
        not_failures = queryset.exclude(result=Result.FAILURE).count()
        if not_failures:
            report(self, request, NOT_FAILURES, not_failures, messages.INFO)
        if undecodable:
            report(self, request, UNDECODABLE, undecodable, messages.WARNING)


@admin.register(RelayState)
class RelayStateAdmin(admin.ModelAdmin):
    """The shared state of the relays (:mod:`mailer.ratelimits`): which are paused, and until when. Read only:
    the senders write it, under the row's lock."""

    list_display = ["relay", "paused_until", "pause_seconds", "last_at"]
    fields = list_display
    readonly_fields = list_display
    ordering = ["relay"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
