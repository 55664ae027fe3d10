"""Admin pages for the queue, the log and the don't-send list.

The serialised ``message_data`` is never shown as an editable field: the
pages show what it decodes to (recipients, subject, plain text body).

Everything read from an email is escaped with :func:`~django.utils.html.escape`,
which escapes ``SafeString`` too: a subject or body rendered by a template with
autoescaping off (every plain-text email template) is a ``SafeString`` holding
whatever the user typed, and the admin would otherwise show it as HTML.
"""

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.template.defaultfilters import linebreaksbr
from django.utils import timezone
from django.utils.html import escape
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy

from mailer.addresses import address_key
from mailer.choices import Priority, Result
from mailer.engine import send_all
from mailer.models import DontSendEntry, Message, MessageLog

UNAVAILABLE = _("<Message data unavailable>")

# What the actions report: ngettext_lazy picks the plural form from the "count" value.
RETRIED = ngettext_lazy(
    "%(count)d deferred message put back on the queue.", "%(count)d deferred messages put back on the queue.", "count"
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


@admin.register(Message)
class MessageAdmin(EmailFieldsMixin, admin.ModelAdmin):
    list_display = ["id", "to", "subject", "when_added", "priority", "retry_count", "mailer"]
    list_filter = ["priority", "mailer"]
    date_hierarchy = "when_added"
    fields = ["to", "subject", "priority", "mailer", "when_added", "retry_count", "plain_text_body"]
    readonly_fields = ["to", "subject", "mailer", "when_added", "retry_count", "plain_text_body"]
    actions = ["send_messages", "retry_deferred", "move_to_high", "move_to_low", "add_to_dont_send"]

    def has_add_permission(self, request):
        # Mail is queued through Django's mail functions, not typed in here.
        return False

    def has_add_to_dont_send_permission(self, request):
        return request.user.has_perm("mailer.add_dontsendentry")

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, {**(extra_context or {}), "priority_counts": self.priority_counts(request)}
        )

    def priority_counts(self, request):
        """[(label, count, changelist query string)] for each priority and the whole queue, in one query."""
        counts = self.get_queryset(request).aggregate(
            total=Count("pk"), **{f"p{p.value}": Count("pk", filter=Q(priority=p)) for p in Priority}
        )
        rows = [(p.label, counts[f"p{p.value}"], f"?priority__exact={p.value}") for p in Priority]
        return [*rows, (_("total"), counts["total"], "?")]

    @admin.action(description=_("Send selected messages"), permissions=["change"])
    def send_messages(self, request, queryset):
        result = send_all(queryset)
        if result is None:
            self.message_user(request, _("Another sender is running; nothing was sent."), messages.WARNING)
            return
        self.message_user(
            request,
            ngettext("%(count)d message sent.", "%(count)d messages sent.", result.sent) % {"count": result.sent},
            messages.SUCCESS if result.sent else messages.INFO,
        )

    @admin.action(description=_("Retry selected deferred messages"), permissions=["change"])
    def retry_deferred(self, request, queryset):
        retried = queryset.retry_deferred()
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
    list_display = ["to_address", "when_added"]
    search_fields = ["to_address"]


@admin.register(MessageLog)
class MessageLogAdmin(EmailFieldsMixin, admin.ModelAdmin):
    list_display = ["id", "to", "subject", "message_id", "when_attempted", "result", "mailer"]
    list_filter = ["result", "when_attempted", "mailer"]
    date_hierarchy = "when_attempted"
    search_fields = ["message_id", "=provider_message_id"]
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
            copies.append(Message(message_data=log.message_data, priority=priority, mailer=log.mailer))
        Message.objects.bulk_create(copies)
        report(self, request, REQUEUED, len(copies))
        not_failures = queryset.exclude(result=Result.FAILURE).count()
        if not_failures:
            report(self, request, NOT_FAILURES, not_failures, messages.INFO)
        if undecodable:
            report(self, request, UNDECODABLE, undecodable, messages.WARNING)
