"""The list filters of the queue's admin page: where a message stands, and when it expires.

Each goes by the managers' definitions (:class:`~mailer.managers.MessageQuerySet`), so that what the
list shows agrees with what the senders take.
"""

import datetime

from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


class StateFilter(admin.SimpleListFilter):
    """Where a message stands: senders take it now, it waits for its send time or for its next attempt, or it is
    deferred."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("due", _("due now")),
            ("scheduled", _("scheduled for later")),
            ("waiting", _("waiting for a retry")),
            ("deferred", _("deferred")),
        ]

    def queryset(self, request, queryset):
        return {
            "due": queryset.due,
            "scheduled": queryset.scheduled,
            "waiting": queryset.waiting_for_retry,
            "deferred": queryset.deferred,
        }.get(self.value(), queryset.all)()


class ExpiryFilter(admin.SimpleListFilter):
    """When a message stops being worth sending (``expires_at``): passed already (no sender has reached it yet),
    soon, or never."""

    title = _("expiry")
    parameter_name = "expiry"

    def lookups(self, request, model_admin):
        return [
            ("expired", _("expired")),
            ("hour", _("expires within an hour")),
            ("day", _("expires within a day")),
            ("never", _("never expires")),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        value = self.value()
        if value == "expired":
            return queryset.filter(expires_at__lte=now)
        if value in ("hour", "day"):
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + (HOUR if value == "hour" else DAY))
        if value == "never":
            return queryset.filter(expires_at__isnull=True)
        return queryset
