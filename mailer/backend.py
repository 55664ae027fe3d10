"""The email backend that puts mail on the queue instead of sending it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from mailer import enqueue

logger = logging.getLogger(__name__)


class DbBackend(BaseEmailBackend):
    """``EMAIL_BACKEND = "mailer.backend.DbBackend"``: every Django mail function queues.

    ``send_messages()`` stores the whole batch in one transaction (one
    ``bulk_create``, batched by ``MAILER_MESSAGES_BATCH_SIZE``) and returns
    the number of messages queued.
    """

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        try:
            return enqueue.queue(list(email_messages))
        except Exception:
            if not self.fail_silently:
                raise
            logger.exception("Could not queue %d message(s); fail_silently is set", len(email_messages))
            return 0
