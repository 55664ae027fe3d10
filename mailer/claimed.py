"""Reading a claimed batch's messages: decoding them, and what happens to those that do not decode.

A mixin of :class:`mailer.engine._Sender`, kept apart from the sending itself.
Small messages are read with the claim and decoded at once, and the
don't-send list is looked up once for all of them. A big message (see
:func:`mailer.claims.is_big`) is read, decoded and looked up when its turn
comes, and let go once it is dealt with (:func:`release`): a claim holds one
big message at a time, whatever the size of its mail.

Data that does not decode is either held back (intact, but this process
cannot read it: another ``SECRET_KEY``, a class it lacks) or discarded
(corrupt): see docs/errors.rst.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from mailer import claims, serialization
from mailer.dontsend import remove_blocked
from mailer.logrows import log_fields
from mailer.models import RESULT_DONT_SEND, RESULT_FAILURE, Message

if TYPE_CHECKING:
    from mailer.engine import _Batch

logger = logging.getLogger("mailer.engine")  # what these messages have always been logged on


class QueueNotDecodable(ImproperlyConfigured):
    """A pass found only rows that this process cannot decode, though they are intact: it stopped.

    Raised after the pass's claim is committed (nothing was changed). The
    sender's configuration or code differs from that of the process that
    queued the mail (``SECRET_KEY``, a class not deployed yet): fix that.
    """


def release(message: Message) -> None:
    """Drop what a dealt-with message holds of its data, so that a claim of big messages does not keep them all."""
    message.__dict__.pop("_email_cache", None)
    if claims.is_big(message):
        message.message_data = None


# What read_claim() gives for each message to send: its email; None for a big message, read at its turn;
# or why it cannot be decoded here, to be held back at its turn.
Readable = EmailMessage | serialization.NotDecodableHere | None


class ClaimedMessages:
    """The reading half of a sending pass (a mixin: the pass provides claim, result, report and pass_over)."""

    decoded_any = False  # has this pass decoded any message?
    check_list = True  # must recipients be looked up in the don't-send list?

    def read_claim(self, messages: list[Message], batch: _Batch) -> list[tuple[Message, Readable]]:
        """The claimed messages to send, in order, each with a :data:`Readable`.

        A message held back is only passed over when the sender reaches it:
        passing over moves the next claim's start past it, and the messages
        before it that this batch does not reach must be claimed again.
        """
        in_use = getattr(messages[0], "dont_send_list_in_use", None)
        self.check_list = in_use is None or bool(in_use)  # False: the claim found the list empty
        ready: list[tuple[Message, Readable]] = []
        for message in messages:
            if claims.is_big(message):
                ready.append((message, None))
                continue
            self.claim.read_data(message)
            try:
                email = self.decode(message, batch)
            except serialization.NotDecodableHere as exc:
                ready.append((message, exc))
                continue
            if email is not None:
                ready.append((message, email))
        emails = [email for _message, email in ready if isinstance(email, EmailMessage)]
        blocked = {id(email) for email in remove_blocked(emails)} if emails and self.check_list else set()
        return [
            (message, email)
            for message, email in ready
            if not isinstance(email, EmailMessage) or not self.skip_blocked(message, email, id(email) in blocked, batch)
        ]

    def stop_if_nothing_decodes(self, messages: list[Message], batch: _Batch) -> None:
        if batch.held == len(messages) and not self.decoded_any and batch.error is None:
            # Not one message this pass could read, and these are intact: the sender is misconfigured.
            batch.error = QueueNotDecodable(
                f"stopped: none of the {batch.held} message(s) claimed could be decoded by this process, though "
                "they are intact (see the errors above): check SECRET_KEY and SECRET_KEY_FALLBACKS, and that "
                "the senders run the same code as the processes that queue mail"
            )

    def prepare_big(self, message: Message, batch: _Batch) -> EmailMessage | None:
        """Read and decode a big message when its turn comes; None if it is not to be sent."""
        self.claim.read_data(message)
        try:
            email = self.decode(message, batch)
        except serialization.NotDecodableHere as exc:
            self.hold(message, exc, batch)
            email = None
        if email is None:
            message.message_data = None
            return None
        if self.skip_blocked(message, email, self.check_list and bool(remove_blocked([email])), batch):
            release(message)
            return None
        return email

    def decode(self, message: Message, batch: _Batch) -> EmailMessage | None:
        """The claimed message's email; None when it is corrupt (discarded).

        Raises :class:`~mailer.serialization.NotDecodableHere` for the caller to hold the message back.
        """
        try:
            email = serialization.loads(message.message_data)
        except serialization.NotDecodableHere:
            raise
        except serialization.UndecodableMessage as exc:
            self.discard(message, exc, batch)
            self.report()
            return None
        self.decoded_any = True
        # The handler and MessageLog.objects.log() read message.email: decode once.
        message._email_cache = (message.message_data, email)
        return email

    def skip_blocked(self, message: Message, email: EmailMessage, blocked: bool, batch: _Batch) -> bool:
        """Log and drop a message none of whose recipients is left after the don't-send list."""
        if not blocked:
            return False
        logger.info("not sending message %s: no recipient left after the don't send list", message.pk)
        batch.log(message, log_fields(message, email, RESULT_DONT_SEND, "no recipient left"))
        batch.done.append(message.pk)
        self.result.skipped += 1
        self.report()
        return True

    def hold(self, message: Message, exc: serialization.NotDecodableHere, batch: _Batch) -> None:
        """Leave an intact row this process cannot decode queued, and say why and what to fix."""
        self.pass_over(message)
        self.result.held += 1
        batch.held += 1
        logger.error("message %s (queued on %s) held back, left on the queue: %s", message.pk, message.when_added, exc)

    def discard(self, message: Message, exc: serialization.UndecodableMessage, batch: _Batch) -> None:
        logger.warning(
            "message discarded due to failure in converting from DB. Added on '%s' with priority '%s': %s",
            message.when_added,
            message.priority,
            exc,
        )
        batch.done.append(message.pk)
        if message.message_data:
            # Corrupt, not empty: keep the raw data in the log for inspection.
            batch.log(
                message,
                {
                    **log_fields(message, None, RESULT_FAILURE),
                    "message_data": message.message_data,
                    "log_message": f"message discarded due to failure in converting from DB: {exc}",
                },
            )
            self.result.failed += 1
