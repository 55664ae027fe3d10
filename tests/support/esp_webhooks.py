"""ESP webhook calls as Postmark and Mailgun make them, posted to django-anymail's own webhook views.

The payloads follow the ESPs' documented formats; anymail's views check the credentials (Postmark: HTTP basic
auth with ``ANYMAIL["WEBHOOK_SECRET"]``; Mailgun: the HMAC signature made with its webhook signing key),
turn them into ``AnymailTrackingEvent`` and send anymail's ``tracking`` signal. ``webhook_settings`` sets both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid

WEBHOOK_SECRET = "hooks:not-so-secret"
MAILGUN_SIGNING_KEY = "mailgun-signing-key-for-tests"
POSTMARK_URL = "/anymail/postmark/tracking/"
MAILGUN_URL = "/anymail/mailgun/tracking/"

_ids = itertools.count(4323372036854775807)


def webhook_settings(settings) -> None:
    """What a project sets for anymail's webhooks of the two ESPs (pytest-django's ``settings`` fixture)."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_SIGNING_KEY}


def _basic_auth(secret: str = WEBHOOK_SECRET) -> str:
    return "Basic " + base64.b64encode(secret.encode()).decode()


def post_postmark(client, payload: dict, secret: str = WEBHOOK_SECRET):
    return client.post(
        POSTMARK_URL, data=json.dumps(payload), content_type="application/json", HTTP_AUTHORIZATION=_basic_auth(secret)
    )


def postmark_bounce(
    address: str, kind: str = "HardBounce", message_id: str | None = None, bounce_id: int | None = None
) -> dict:
    """A Postmark bounce webhook: ``kind`` is its Type (HardBounce, Transient, SpamComplaint...)."""
    record = "SpamComplaint" if kind == "SpamComplaint" else "Bounce"
    return {
        "RecordType": record,
        "ID": next(_ids) if bounce_id is None else bounce_id,
        "Type": kind,
        "TypeCode": 1,
        "Tag": "",
        "MessageID": message_id or str(uuid.uuid4()),
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": address,
        "From": "sender@example.com",
        "BouncedAt": "2026-11-30T16:33:54.9070259Z",
        "Inactive": kind == "HardBounce",
        "CanActivate": True,
        "Subject": "Hello",
        "Metadata": {},
    }


def postmark_unsubscribe(address: str, message_id: str | None = None) -> dict:
    """Postmark's SubscriptionChange webhook for a recipient who unsubscribed (its ManualSuppression)."""
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": message_id or str(uuid.uuid4()),
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": "2026-11-30T16:40:00Z",
        "Recipient": address,
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "",
        "Metadata": {},
    }


def postmark_delivery(address: str, message_id: str | None = None) -> dict:
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": message_id or str(uuid.uuid4()),
        "Recipient": address,
        "Tag": "",
        "DeliveredAt": "2026-11-30T16:33:54Z",
        "Details": "Test delivery webhook details",
        "Metadata": {},
    }


def post_mailgun(client, event_data: dict, key: str = MAILGUN_SIGNING_KEY):
    """Post Mailgun's JSON webhook for ``event_data``, signed as Mailgun signs it (with the basic auth that anymail
    asks of every ESP's webhook once ``WEBHOOK_SECRET`` is set)."""
    timestamp, token = str(int(time.time())), uuid.uuid4().hex
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    payload = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}
    return client.post(
        MAILGUN_URL, data=json.dumps(payload), content_type="application/json", HTTP_AUTHORIZATION=_basic_auth()
    )


def mailgun_event(address: str, event: str, severity: str | None = None, at: float | None = None) -> dict:
    """Mailgun's event-data: ``event`` is failed (with ``severity`` permanent or temporary), delivered,
    complained or unsubscribed."""
    data = {
        "id": uuid.uuid4().hex[:22],
        "event": event,
        "timestamp": time.time() if at is None else at,
        "recipient": address,
        "message": {"headers": {"message-id": f"{uuid.uuid4().hex}@mg.example.com", "to": address}},
        "tags": [],
        "user-variables": {},
    }
    if event == "failed":
        data["severity"] = severity or "permanent"
        data["reason"] = "bounce" if data["severity"] == "permanent" else "generic"
        data["delivery-status"] = {
            "code": 550 if data["severity"] == "permanent" else 452,
            "message": "5.1.1 No such user" if data["severity"] == "permanent" else "4.2.2 Mailbox full",
            "description": "",
        }
    return data
