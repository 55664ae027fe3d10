"""The don't-send list, applied to whole batches of emails with one query."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from email.utils import parseaddr

from django.core.mail import EmailMessage
from django.db.models.functions import Lower

from mailer.models import DontSendEntry

logger = logging.getLogger(__name__)

# Keep each IN (...) well below every database's limit on query parameters.
_CHUNK = 500


def address_key(address: str) -> str:
    """``"Ann <ANN@x.org>"`` -> ``"ann@x.org"``: how the list matches an address."""
    return parseaddr(address)[1].lower()


def blocked_addresses(addresses: Iterable[str]) -> set[str]:
    """The subset of ``addresses`` (as :func:`address_key`) that is on the don't-send list."""
    keys = sorted({address_key(a) for a in addresses} - {""})
    blocked: set[str] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        blocked.update(
            DontSendEntry.objects.annotate(key=Lower("to_address")).filter(key__in=chunk).values_list("key", flat=True)
        )
    return blocked


def remove_blocked(emails: Sequence[EmailMessage]) -> list[EmailMessage]:
    """Drop don't-send addresses from the to, cc and bcc of ``emails`` (in place).

    Returns the emails left with no recipient at all. Costs one query for the
    whole batch (more only for batches of many hundreds of addresses).
    """
    blocked = blocked_addresses(addr for email in emails for addr in email.recipients())
    empty = []
    for email in emails:
        if blocked:
            for field in ("to", "cc", "bcc"):
                addresses = getattr(email, field)
                kept = [a for a in addresses if address_key(a) not in blocked]
                if len(kept) != len(addresses):
                    logger.info(
                        "skipping %s as on the don't send list",
                        ", ".join(a for a in addresses if address_key(a) in blocked),
                    )
                    setattr(email, field, kept)
        if not email.recipients():
            empty.append(email)
    return empty
