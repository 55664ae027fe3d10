"""The don't-send list, applied to whole batches of emails with one query."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from django.core.mail import EmailMessage
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from mailer.addresses import address_key
from mailer.logtext import loggable
from mailer.models import DontSendEntry, dont_send_list_changed

logger = logging.getLogger("mailer.recipients")  # its documented name, from before the module was renamed

# Keep each IN (...) well below every database's limit on query parameters.
_CHUNK = 500

# How long a process trusts having seen the list empty; changes made through the ORM in this process
# are seen at once (signals). The list is checked again, exactly, when the message is sent.
EMPTY_FOR = 1.0
_seen_empty_at: float | None = None


def _list_is_empty() -> bool:
    """Is the don't-send list empty? Asks the database at most once per ``EMPTY_FOR`` seconds while it is."""
    global _seen_empty_at
    now = time.monotonic()
    if _seen_empty_at is not None and now - _seen_empty_at < EMPTY_FOR:
        return True
    empty = not DontSendEntry.objects.exists()
    _seen_empty_at = now if empty else None
    return empty


@receiver([post_save, post_delete, dont_send_list_changed], sender=DontSendEntry)
def _forget_emptiness(**kwargs) -> None:
    global _seen_empty_at
    _seen_empty_at = None


def blocked_addresses(addresses: Iterable[str], *, queueing: bool = False) -> set[str]:
    """The subset of ``addresses`` (as :func:`address_key`) that is on the don't-send list.

    When ``queueing``, a list seen empty less than ``EMPTY_FOR`` seconds ago
    is not asked again: queueing then costs no query on sites without a
    don't-send list. Sending always asks.
    """
    blocked: set[str] = set()
    if queueing and _list_is_empty():
        return blocked
    keys = sorted({address_key(a) for a in addresses} - {""})
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        blocked.update(DontSendEntry.objects.keys_on_list(chunk))
    return blocked


def remove_blocked(emails: Sequence[EmailMessage], *, queueing: bool = False) -> list[EmailMessage]:
    """Drop don't-send addresses from the to, cc and bcc of ``emails`` (in place).

    Returns the emails left with no recipient at all. Costs one query for the
    whole batch (more only for batches of many hundreds of addresses).
    """
    blocked = blocked_addresses((addr for email in emails for addr in email.recipients()), queueing=queueing)
    empty = []
    for email in emails:
        if blocked:
            for field in ("to", "cc", "bcc"):
                addresses = getattr(email, field)
                kept = [a for a in addresses if address_key(a) not in blocked]
                if len(kept) != len(addresses):
                    logger.info(
                        "skipping %s as on the don't send list",
                        loggable(", ".join(a for a in addresses if address_key(a) in blocked)),
                    )
                    setattr(email, field, kept)
        if not email.recipients():
            empty.append(email)
    return empty
