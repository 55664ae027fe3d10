"""The email backend that puts mail on the queue instead of sending it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from mailer import enqueue

logger = logging.getLogger(__name__)


class DbBackend(BaseEmailBackend):
    """Queue every message instead of sending it.

    Before Django 6.1: ``EMAIL_BACKEND = "mailer.backend.DbBackend"``. With
    Django 6.1's ``MAILERS``, as the ``BACKEND`` of one alias or more, with
    these ``OPTIONS``:

    ``deliver_using``
        The ``MAILERS`` alias that really sends what this alias queues
        (default: the ``MAILER_DELIVER_USING`` setting).
    ``priority``
        The priority of what this alias queues, one of the
        ``mailer.models.PRIORITY_*`` constants (default: medium).

    Other options are refused the way Django refuses them. ``send_messages()``
    stores the whole batch in one transaction, or nothing if any message is
    invalid, and returns the number of messages queued. A message's
    ``send_at`` and ``expires_at`` attributes schedule it
    (:mod:`mailer.scheduling`); the stored email keeps neither.
    """

    def __init__(
        self, fail_silently: bool = False, *, deliver_using: str | None = None, priority: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)  # ``alias``, and Django's error for unknown options
        # Django 6.1 leaves fail_silently to the backends that support it.
        self.fail_silently = fail_silently
        self.deliver_using = deliver_using
        self.priority = enqueue.get_priority(priority)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        try:
            return enqueue.queue(list(email_messages), self.priority, mailer=getattr(self, "alias", None))
        except Exception:
            if not self.fail_silently:
                raise
            logger.exception("Could not queue %d message(s); fail_silently is set", len(email_messages))
            return 0
