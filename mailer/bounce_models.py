"""What the don't-send list keeps of the delivery events that fill it (migration 0017).

:class:`EventFields` are the fields a :class:`~mailer.models.DontSendEntry` records of the event that added it:
all nullable, so entries made by hand (and by older versions) have none, and an older process keeps writing rows.
:class:`SoftBounce` counts the soft bounces of addresses not on the list yet, for ``MAILER_SOFT_BOUNCE_LIMIT``.
What is done with them is in :mod:`mailer.bounces`.
"""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils.translation import gettext_lazy as _

from mailer.choices import DontSendReason
from mailer.logrows import PROVIDER_ID_LENGTH

# Column widths of what an event carries; longer values are cut (mailer.bounces.event_details).
ESP_NAME_LENGTH = 100
EVENT_ID_LENGTH = 255
DETAIL_LENGTH = 2000

SOFT_BOUNCE_INDEX = "mailer_softbounce_address_idx"  # an address's soft bounces in the window
SOFT_BOUNCE_AGE_INDEX = "mailer_softbounce_at_idx"  # those too old to count, deleted


def address_digest(key: str) -> str:
    """The SHA-256 of an entry's address (as :func:`~mailer.addresses.entry_key` stores it), in hex.

    A digest, not the address, carries the unique index: the index is short, and MariaDB's default
    collations, which ignore accents, would take "änn@x.org" for a second "ann@x.org".
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class EventFields(models.Model):
    """Why an entry is on the list and which event of which ESP put it there."""

    reason = models.CharField(
        _("reason"),
        max_length=20,
        choices=DontSendReason.choices,
        null=True,
        blank=True,
        help_text=_("The delivery event that added the address; empty for an entry made by hand."),
    )
    esp_name = models.CharField(_("ESP"), max_length=ESP_NAME_LENGTH, null=True, blank=True)
    event_id = models.CharField(_("event id"), max_length=EVENT_ID_LENGTH, null=True, blank=True)
    event_at = models.DateTimeField(_("event time"), null=True, blank=True)
    provider_message_id = models.CharField(
        _("provider message id"),
        max_length=PROVIDER_ID_LENGTH,
        null=True,
        blank=True,
        help_text=_("The id the ESP gave the message that bounced; the message log finds the message by it."),
    )
    detail = models.TextField(
        _("detail"), null=True, blank=True, help_text=_("What the ESP said: its description and the server's reply.")
    )
    # Set by DontSendEntry.objects.add_once() only: its unique index makes two events at once add one entry.
    address_digest = models.CharField(
        _("address digest"), max_length=64, null=True, blank=True, unique=True, editable=False
    )

    class Meta:
        abstract = True


class SoftBounce(models.Model):
    """One soft bounce (a ``deferred`` event) of ``address``, kept while it counts towards the limit."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    address = models.CharField(_("address"), max_length=254)
    at = models.DateTimeField(_("at"))
    esp_name = models.CharField(_("ESP"), max_length=ESP_NAME_LENGTH, null=True, blank=True)
    event_id = models.CharField(_("event id"), max_length=EVENT_ID_LENGTH, null=True, blank=True)

    class Meta:
        verbose_name = _("soft bounce")
        verbose_name_plural = _("soft bounces")
        indexes = [
            models.Index(fields=["address", "at"], name=SOFT_BOUNCE_INDEX),
            models.Index(fields=["at"], name=SOFT_BOUNCE_AGE_INDEX),
        ]

    def __str__(self) -> str:
        return f"{self.address} at {self.at}"
