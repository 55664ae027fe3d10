"""The senders in the admin: each process's heartbeat row, read only, with its state by :func:`mailer.senders.state`."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from mailer import senders
from mailer.sender_models import SenderHeartbeat


@admin.register(SenderHeartbeat)
class SenderHeartbeatAdmin(admin.ModelAdmin):
    """Who sends, on which host, and whether it is still there. The senders write these rows; nobody edits them."""

    list_display = ["host", "pid", "kind", "alias", "state", "started", "last_seen", "stopped_at", "sent", "rate"]
    list_filter = ["kind", "host"]
    fields = ["host", "pid", "kind", "alias", "state", "started", "last_seen", "stopped_at", "sent", "rate", "interval"]
    readonly_fields = fields
    ordering = ["host", "pid"]

    @admin.display(description=_("state"))
    def state(self, obj: SenderHeartbeat) -> str:
        return senders.state(obj, timezone.now())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
