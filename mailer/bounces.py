"""Delivery events that put addresses on the don't-send list.

A hard bounce, a complaint or an unsubscribe adds the recipient at once (once, whatever the case of the
address). A soft bounce adds nothing, unless ``MAILER_SOFT_BOUNCE_LIMIT = (N, DAYS)``: then the address is added
at its Nth soft bounce within DAYS days. Events come from :mod:`mailer.contrib.anymail` (django-anymail's
``tracking`` signal), which turns them into :class:`DeliveryEvent`; this module needs no ESP library.

Soft bounces are counted in their own small table (:class:`~mailer.models.SoftBounce`), not in the log: the log
records what the senders did, is purged on its own schedule (``purge_mail_log``), may not hold the message at all
(``MAILER_EMAIL_LOG_MESSAGE_DATA``, or an ESP's id it never learnt), and one message has one row there however
many times its recipients bounce. The table only holds the soft bounces of the last DAYS days of addresses not
yet on the list: each new one deletes those that no longer count.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.db.models import Q
from django.utils.timezone import now

from mailer.addresses import entry_key
from mailer.bounce_models import DETAIL_LENGTH, ESP_NAME_LENGTH, EVENT_ID_LENGTH
from mailer.choices import DontSendReason
from mailer.conf import mailer_settings
from mailer.logrows import PROVIDER_ID_LENGTH, storable
from mailer.logtext import loggable
from mailer.models import DontSendEntry, MessageLog, SoftBounce

logger = logging.getLogger(__name__)

# The event types (django-anymail's words) that add the recipient at once.
REASONS = {
    reason.value: reason for reason in (DontSendReason.BOUNCED, DontSendReason.COMPLAINED, DontSendReason.UNSUBSCRIBED)
}
SOFT_BOUNCE = "deferred"


@dataclass(frozen=True)
class DeliveryEvent:
    """What the list needs of an ESP's event: its type (``"bounced"``, ``"deferred"``...) and where it came from."""

    event_type: str
    recipient: str | None
    esp_name: str | None = None
    event_id: str | None = None
    at: datetime.datetime | None = None  # when the ESP says it happened
    provider_message_id: str | None = None
    detail: str | None = None

    def entry_fields(self, reason: DontSendReason, detail: str | None = None) -> dict[str, Any]:
        """The fields of the don't-send entry this event adds, cut to their columns."""
        return {
            "reason": reason.value,
            "esp_name": storable(self.esp_name, ESP_NAME_LENGTH),
            "event_id": storable(self.event_id, EVENT_ID_LENGTH),
            "event_at": self.at,
            "provider_message_id": storable(self.provider_message_id, PROVIDER_ID_LENGTH),
            "detail": storable(detail if detail is not None else self.detail, DETAIL_LENGTH),
        }


def soft_bounce_limit() -> tuple[int, datetime.timedelta] | None:
    """``MAILER_SOFT_BOUNCE_LIMIT`` as (count, window); ``None`` when unset. Raises ``ImproperlyConfigured``."""
    value = mailer_settings.SOFT_BOUNCE_LIMIT
    if value is None:
        return None
    try:
        count, days = value
        valid = all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (count, days))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ImproperlyConfigured(
            f"MAILER_SOFT_BOUNCE_LIMIT is {value!r}; it must be None or a pair of whole numbers (N, DAYS), "
            "each 1 or more: the address is added at its Nth soft bounce within DAYS days."
        )
    return count, datetime.timedelta(days=days)


def record(event: DeliveryEvent) -> None:
    """Put the event's recipient on the list if the event calls for it; other events are ignored."""
    if not event.recipient or "@" not in event.recipient:
        return
    reason = REASONS.get(event.event_type)
    if reason is not None:
        if DontSendEntry.objects.add_once(event.recipient, **event.entry_fields(reason)):
            _log_added(event, reason)
    elif event.event_type == SOFT_BOUNCE:
        _count_soft_bounce(event)


def _count_soft_bounce(event: DeliveryEvent) -> None:
    limit = soft_bounce_limit()
    if limit is None:
        return
    count, window = limit
    key = entry_key(event.recipient)
    if DontSendEntry.objects.keys_on_list([key]):
        return
    using = router.db_for_write(SoftBounce)
    bounces = SoftBounce.objects.using(using)
    esp_name, event_id = storable(event.esp_name, ESP_NAME_LENGTH), storable(event.event_id, EVENT_ID_LENGTH)
    if event_id and bounces.filter(esp_name=esp_name, event_id=event_id).exists():
        return  # the ESP delivered the same event again
    at = event.at or now()
    if at >= now() - window:
        bounces.create(address=key, at=at, esp_name=esp_name, event_id=event_id)
    # Counted once this soft bounce is committed: of two arriving at once, the one committed last sees both.
    transaction.on_commit(lambda: _add_past_limit(event, key, count, window, using), using=using)


def _add_past_limit(event: DeliveryEvent, key: str, count: int, window: datetime.timedelta, using: str) -> None:
    cutoff = now() - window
    expired = SoftBounce.objects.using(using).filter(at__lt=cutoff)
    if expired.exists():  # a plain read first: deleting takes locks (on MySQL, gaps too) that others wait for
        expired.delete()  # no longer counts, for any address
    bounces = SoftBounce.objects.using(using).filter(address=key)
    seen = bounces.filter(at__gte=cutoff).count()
    if seen < count:
        return
    days = window.days
    detail = f"{seen} soft bounces within {days} day{'s' if days != 1 else ''}" + (
        f"; the last: {event.detail}" if event.detail else ""
    )
    reason = DontSendReason.SOFT_BOUNCES
    if DontSendEntry.objects.db_manager(using).add_once(key, **event.entry_fields(reason, detail)):
        _log_added(event, reason)
    bounces.delete()  # counted: if the entry is removed later, the address starts again from none


def _log_added(event: DeliveryEvent, reason: DontSendReason) -> None:
    logger.info(
        "added %s to the don't send list: %s (%s event %s)",
        loggable(event.recipient),
        reason.word,
        event.esp_name or "unknown ESP",
        event.event_id or "without id",
    )


def message_log(entry: DontSendEntry) -> MessageLog | None:
    """The log row of the message whose event added ``entry``: found by the provider's message id.

    ``None`` when the event carried no id, or the row was purged (``purge_mail_log``): the id stays on the entry,
    what the ESP's own pages find the message by. A message sent to several recipients may have been given one
    id per recipient, logged together as ``"id1, id2"``: that row is found too, at the cost of a scan of the log.
    """
    wanted = entry.provider_message_id
    if not wanted:
        return None
    rows = MessageLog.objects.order_by("-pk")
    found = rows.filter(provider_message_id=wanted).first()
    if found is None and ", " not in wanted:
        found = rows.filter(
            Q(provider_message_id__startswith=f"{wanted}, ")
            | Q(provider_message_id__contains=f", {wanted}, ")
            | Q(provider_message_id__endswith=f", {wanted}")
        ).first()
    return found
