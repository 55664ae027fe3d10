"""Admin pages for the queue, the log, the don't-send list and the relays' state.

The serialised ``message_data`` is never shown as an editable field: a message's page shows what it
decodes to, the whole email (:mod:`mailer.admin_email`); the lists show the columns of
:mod:`mailer.admin_columns`; what the actions say is in :mod:`mailer.admin_reports`. The alias
(``mailer``) column, filter and field only show when the project uses Django 6.1's ``MAILERS``. Messages
and log entries are named by their readable titles (:mod:`mailer.admin_titles`).
"""

from typing import Any

from django.contrib import admin, messages
from django.db import router
from django.db.models import Count, Q
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from mailer import (
    admin_senders,  # noqa: F401  (registers the senders' page)
    bounces,
    drain_hook,
    postgres,
    ratelimits,
)
from mailer.addresses import address_key
from mailer.admin_columns import EmailColumnsMixin, RetryFieldsMixin
from mailer.admin_email import EMAIL_FIELDS, EmailPageMixin
from mailer.admin_filters import ExpiryFilter, StateFilter
from mailer.admin_reports import (
    ADDED,
    ALREADY_LISTED,
    LEFT_DEFERRED,
    MADE_DUE,
    MADE_DUE_NOW,
    MAX_RETRIES_REACHED,
    MOVED,
    NOT_DUE,
    NOT_FAILURES,
    NOT_YET,
    REQUEUED,
    RETRIED,
    UNDECODABLE,
    report,
    report_sent,
)
from mailer.admin_titles import TitlesMixin
from mailer.choices import Priority, Result
from mailer.engine import send_all
from mailer.models import DontSendEntry, LogRecipient, Message, MessageLog, RelayState
from mailer.routing import mailers_configured

ALIAS = "mailer"  # the field, column and filter of the MAILERS alias


class AliasOnlyWithMailersMixin:
    """Without ``MAILERS`` every message's alias is empty: no column, filter or field for it then."""

    def get_list_display(self, request: HttpRequest) -> Any:
        return _without_alias(super().get_list_display(request))

    def get_list_filter(self, request: HttpRequest) -> Any:
        return _without_alias(super().get_list_filter(request))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        return [(name, {**options, "fields": _without_alias(options["fields"])}) for name, options in fieldsets]


def search(queryset, term):
    """The queue's and the log's search (their querysets' ``search()``); it never returns a row twice."""
    return queryset.search(term), False


def _without_alias(names: Any) -> Any:
    return names if mailers_configured() else [name for name in names if name != ALIAS]


@admin.register(Message)
class MessageAdmin(
    AliasOnlyWithMailersMixin, RetryFieldsMixin, EmailColumnsMixin, EmailPageMixin, TitlesMixin, admin.ModelAdmin
):
    list_display = [
        "when_added",
        "to",
        "subject",
        "priority",
        "retry_count",
        "failed_attempts",
        "next_attempt",
        "expiry",
        "last_error_short",
        "mailer",
        "id",
    ]
    list_filter = [StateFilter, ExpiryFilter, "priority", "when_added", "mailer"]
    date_hierarchy = "when_added"
    search_fields = ["recipients", "subject_text"]  # shows the search box; the search is Message.objects.search()
    search_help_text = _("An address (To, Cc or Bcc, any case), or words of the subject or of the recipients.")
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "priority",
                    "when_added",
                    "retry_count",
                    "failed_attempts",
                    "next_attempt",
                    "expiry",
                    "last_error",
                    "mailer",
                ]
            },
        ),
        (_("Email"), {"fields": EMAIL_FIELDS}),
    ]
    # The priority is the one thing to change.
    readonly_fields = [name for _name, options in fieldsets for name in options["fields"] if name != "priority"]
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
        report_sent(self, request, result)
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
            drain_hook.queued(None, router.db_for_write(Message))  # and MAILER_DRAIN_TASKS's chains, on commit
        report(self, request, MADE_DUE_NOW, made_due)
        deferred = queryset.deferred().count()
        if deferred:
            report(self, request, LEFT_DEFERRED, deferred, messages.WARNING)

    @admin.action(description=_("Retry selected deferred messages"), permissions=["change"])
    def retry_deferred(self, request, queryset):
        """As ``retry_deferred`` does: deferred messages go back on the queue, waiting ones are due now."""
        made_due = queryset.waiting_for_retry().update(not_before=None)
        retried = queryset.retry_deferred()  # the deferred ones: those waiting are due now already
        if made_due or retried:
            drain_hook.queued(None, router.db_for_write(Message))
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
class MessageLogAdmin(AliasOnlyWithMailersMixin, EmailColumnsMixin, EmailPageMixin, TitlesMixin, admin.ModelAdmin):
    """The log: read only for everyone (no Save button); entries can be deleted, and failures requeued."""

    title_time = "when_attempted"
    hidden_related = (LogRecipient,)

    list_display = ["when_attempted", "result", "to", "subject", "message_id_short", "mailer", "id"]
    list_filter = ["result", "when_attempted", "mailer"]
    date_hierarchy = "when_attempted"
    search_fields = ["recipients", "subject_text", "message_id", "=provider_message_id"]  # shown; see below
    search_help_text = _(
        "An address (To, Cc or Bcc, any case), or words of the subject, of the recipients or of the Message-ID."
    )
    show_full_result_count = False  # a search's page does not count the whole log as well
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "when_attempted",
                    "result",
                    "log_message",
                    "when_added",
                    "priority",
                    "message_id",
                    "provider_message_id",
                    "mailer",
                ]
            },
        ),
        (_("Email"), {"fields": EMAIL_FIELDS}),
    ]
    readonly_fields = [name for _name, options in fieldsets for name in options["fields"]]
    actions = ["requeue"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # what happened stays as it was logged

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
        drain_hook.queued({copy.mailer for copy in copies}, router.db_for_write(Message))
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
