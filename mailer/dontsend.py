"""The don't-send list, applied to whole batches of emails with one query.

The lookup itself (and what queueing remembers of an empty list) is the model's:
:meth:`~mailer.managers.DontSendEntryManager.blocked_addresses`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.core.mail import EmailMessage

from mailer.addresses import address_key
from mailer.logtext import loggable
from mailer.models import DontSendEntry

FIELDS = ("to", "cc", "bcc")

logger = logging.getLogger("mailer.recipients")  # its documented name, from before the module was renamed


def remove_blocked(emails: Sequence[EmailMessage], *, queueing: bool = False) -> list[EmailMessage]:
    """Drop don't-send addresses from the to, cc and bcc of ``emails`` (in place).

    Returns the emails left with no recipient at all. Those keep their
    addresses, every one of them blocked: they are not sent, and their
    "don't send" log entry says who was blocked (:func:`blocked_text`). Costs
    one query for the whole batch (more only for batches of many hundreds of
    addresses), and none when ``queueing`` on a list recently seen empty (see
    :meth:`~mailer.managers.DontSendEntryManager.blocked_addresses`).
    """
    recipients = (address for email in emails for address in email.recipients())
    blocked = DontSendEntry.objects.blocked_addresses(recipients, queueing=queueing)
    empty = []
    for email in emails:
        dropped = [a for field in FIELDS for a in getattr(email, field) if address_key(a) in blocked] if blocked else []
        if dropped:
            logger.info("skipping %s as on the don't send list", loggable(", ".join(dropped)))
            kept = {field: [a for a in getattr(email, field) if address_key(a) not in blocked] for field in FIELDS}
            if not any(kept.values()):
                empty.append(email)  # not sent: its addresses stay, for the log
                continue
            for field, addresses in kept.items():
                setattr(email, field, addresses)
        elif not email.recipients():
            empty.append(email)
    return empty


def blocked_text(email: EmailMessage, prefix: str) -> str:
    """The log text of an email :func:`remove_blocked` left without a recipient: ``prefix``, and who was blocked."""
    addresses = email.recipients()
    if not addresses:
        return prefix
    return f"{prefix}: {', '.join(addresses)} on the don't-send list"
