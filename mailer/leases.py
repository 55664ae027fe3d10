"""Deliveries that go on across a commit: their messages are *leased*, so that no sender claims them meanwhile.

A sender with several connections (``MAILER_SENDER_CONNECTIONS``) would
otherwise have to wait, at the end of each batch, for the slowest delivery in
flight before it could commit and claim the next batch, every connection
idle but one. Instead, when a batch ends with deliveries still in flight, the
sender moves those messages' ``not_before`` ahead by :func:`lease_seconds`,
in the batch's own transaction, and commits: no claim (its own or another
sender's) takes a message that is not due, though its row is no longer
locked. The next batch records each delivery's outcome as it finishes: a sent
message is removed as usual; one that stays queued gets its own
``not_before`` back, unless its outcome sets one (a retry).

If the sender dies meanwhile, the leased messages (at most one per
connection) stay queued and are sent again once the lease has run out, as a
message whose commit was lost is (see ``docs/guarantees.rst``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.conf import settings
from django.utils import timezone

from mailer.conf import mailer_settings
from mailer.models import Message
from mailer.outcomes import Batch, Outcome
from mailer.smtp import valid_timeout

# A lease lasts this long at least, and 10 times the SMTP timeout when that is longer: well past the longest a
# delivery in flight can last, so that no other sender claims the message while it may still be going out.
MINIMUM_LEASE = 10 * 60


def lease_seconds() -> float:
    """How far ahead a leased message's ``not_before`` is moved."""
    timeouts = [getattr(settings, "EMAIL_TIMEOUT", None), mailer_settings.EMAIL_TIMEOUT]
    return max([MINIMUM_LEASE, *(10 * timeout for timeout in timeouts if valid_timeout(timeout))])


class Leases:
    """The messages of one pass whose deliveries are in flight across a commit, with their own ``not_before``."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.held: dict[int, datetime.datetime | None] = {}  # pk -> not_before before the lease

    def __contains__(self, pk: int) -> bool:
        return pk in self.held

    def __len__(self) -> int:
        return len(self.held)

    def take(self, messages: Iterable[Message]) -> None:
        """Lease ``messages`` (claimed in the current transaction, or leased before), before it commits."""
        new = {message.pk: message.not_before for message in messages if message.pk not in self.held}
        if not new:
            return
        until = timezone.now() + datetime.timedelta(seconds=lease_seconds())
        Message.objects.using(self.using).filter(pk__in=list(new)).update(not_before=until)
        self.held.update(new)

    def settle(self, pk: int, outcome: Outcome, batch: Batch) -> None:
        """The delivery of the leased message ``pk`` is over: give its ``not_before`` back if it stays queued."""
        original = self.held.pop(pk)
        if not outcome.remove and "not_before" not in (outcome.update or {}):
            batch.updates.append((pk, {"not_before": original}))

    def give_back(self, batch: Batch) -> None:
        """The pass stops with leased deliveries not collected: their messages are due again after the commit."""
        batch.updates.extend((pk, {"not_before": original}) for pk, original in self.held.items())
        self.held.clear()
