"""The Message-ID of a queued email: given when it is queued, so that every attempt to send it carries the same one.

A message can go out more than once: its sender died before committing, or the relay took the message
and its "250" reply was lost, or a transient refusal was retried. If each attempt made up a new
Message-ID, receivers and providers could not tell the copies apart; with the one stored on the
queue they can deduplicate them. ``MAILER_ADD_MESSAGE_ID = False`` (for a backend or provider that
sets its own) means none is ever added, neither when queueing nor when sending.
"""

from __future__ import annotations

from django.core.mail import EmailMessage
from django.core.mail.message import make_msgid
from django.core.mail.utils import DNS_NAME

from mailer.conf import mailer_settings


def get_message_id(email: EmailMessage) -> str | None:
    """The email's Message-ID header, whatever the case of its name."""
    headers = email.extra_headers
    found = headers.get("Message-ID")  # as it is set when queued: one lookup for nearly every message
    if found is not None:
        return found
    for key, value in headers.items():
        if key.lower() == "message-id":
            return value
    return None


def new_message_id() -> str:
    """A new Message-ID, as Django's SMTP backend makes one (``DNS_NAME`` is looked up once per process)."""
    return make_msgid(domain=DNS_NAME)


def with_message_id(email: EmailMessage) -> EmailMessage:
    """``email`` to store on the queue: itself if it has a Message-ID (or none is to be added), else a copy with one.

    The caller's email is not changed, as Django's own SMTP backend does not
    change it when it gives a message a Message-ID: a project that queues the
    same ``EmailMessage`` object again (say, after changing its ``to``) must
    get a new Message-ID for the new message, not one that tells receivers it
    is a copy of the first. The copy is shallow, with a new headers dict: it
    only lives until it is serialised, and costs far less than the pickle.
    """
    if not mailer_settings.ADD_MESSAGE_ID or get_message_id(email) is not None:
        return email
    copy = object.__new__(type(email))
    copy.__dict__.update(email.__dict__)
    copy.extra_headers = {**email.extra_headers, "Message-ID": new_message_id()}
    return copy
