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

logger = logging.getLogger("mailer.recipients")  # its documented name, from before the module was renamed


def remove_blocked(emails: Sequence[EmailMessage], *, queueing: bool = False) -> list[EmailMessage]:
    """Drop don't-send addresses from the to, cc and bcc of ``emails`` (in place).

    Returns the emails left with no recipient at all. Costs one query for the
    whole batch (more only for batches of many hundreds of addresses), and none
    when ``queueing`` on a list recently seen empty (see
    :meth:`~mailer.managers.DontSendEntryManager.blocked_addresses`).
    """
    recipients = (address for email in emails for address in email.recipients())
    blocked = DontSendEntry.objects.blocked_addresses(recipients, queueing=queueing)
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
