"""Admin pages for the queue, the log and the don't-send list.

The serialised ``message_data`` is never shown as an editable field: the
pages show what it decodes to (recipients, subject, plain text body).
"""

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from mailer.engine import send_all
from mailer.models import DontSendEntry, Message, MessageLog

UNAVAILABLE = _("<Message data unavailable>")


class EmailFieldsMixin:
    """Columns and fields read from the decoded email."""

    @admin.display(description=_("To"))
    def to(self, obj):
        email = obj.email
        return ", ".join(email.to) if email is not None else UNAVAILABLE

    @admin.display(description=_("Subject"))
    def subject(self, obj):
        email = obj.email
        return email.subject if email is not None else UNAVAILABLE

    @admin.display(description=_("Plain text body"))
    def plain_text_body(self, obj):
        email = obj.email
        return email.body if email is not None else _("<Can't decode>")


@admin.register(Message)
class MessageAdmin(EmailFieldsMixin, admin.ModelAdmin):
    list_display = ["id", "to", "subject", "when_added", "priority", "retry_count", "mailer"]
    list_filter = ["priority", "mailer"]
    date_hierarchy = "when_added"
    fields = ["to", "subject", "priority", "mailer", "when_added", "retry_count", "plain_text_body"]
    readonly_fields = ["to", "subject", "mailer", "when_added", "retry_count", "plain_text_body"]
    actions = ["send_messages"]

    def has_add_permission(self, request):
        # Mail is queued through Django's mail functions, not typed in here.
        return False

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


@admin.register(DontSendEntry)
class DontSendEntryAdmin(admin.ModelAdmin):
    list_display = ["to_address", "when_added"]
    search_fields = ["to_address"]


@admin.register(MessageLog)
class MessageLogAdmin(EmailFieldsMixin, admin.ModelAdmin):
    list_display = ["id", "to", "subject", "message_id", "when_attempted", "result", "mailer"]
    list_filter = ["result", "mailer"]
    date_hierarchy = "when_attempted"
    search_fields = ["message_id"]
    fields = [
        "to",
        "subject",
        "message_id",
        "priority",
        "mailer",
        "when_added",
        "when_attempted",
        "result",
        "log_message",
        "plain_text_body",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False
