"""django-anymail's ``tracking`` signal, received: each event goes to :func:`mailer.bounces.record`."""

from __future__ import annotations

from typing import Any

from anymail.signals import AnymailTrackingEvent, tracking

from mailer import bounces

DISPATCH_UID = "mailer.contrib.anymail"


def on_tracking(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    """Receiver of ``anymail.signals.tracking``: what the ESP's webhook reported, as the list needs it.

    An error (the database unreachable) propagates: anymail's webhook view answers 500, and ESPs send the event
    again later.
    """
    details = [text for text in (event.description, event.mta_response) if text]
    bounces.record(
        bounces.DeliveryEvent(
            event_type=event.event_type,
            recipient=event.recipient,
            esp_name=esp_name,
            event_id=event.event_id,
            at=event.timestamp,
            provider_message_id=event.message_id,
            detail="\n".join(map(str, details)) or None,
        )
    )


def connect() -> None:
    tracking.connect(on_tracking, dispatch_uid=DISPATCH_UID)
