"""Reading a claimed batch: decoding its messages and applying the don't-send list, a claim at a time.

Small messages are read with the claim and decoded at once, and the
don't-send list is looked up once for all of them. A big message (see
:func:`mailer.claims.is_big`) is read, decoded and looked up when its turn
comes, and let go once it is dealt with (:func:`release`): a claim holds one
big message at a time, whatever the size of its mail.

Data that does not decode is either held back (intact, but this process
cannot read it: another ``SECRET_KEY``, a class it lacks) or discarded
(corrupt): see docs/errors.rst. What becomes of such a message is an
:class:`~mailer.outcomes.Outcome`, for the sending loop to apply.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from mailer import claims, outcomes, serialization, standins, storage
from mailer.dontsend import remove_blocked
from mailer.models import Message
from mailer.outcomes import Outcome

logger = logging.getLogger("mailer.engine")


class QueueNotDecodable(ImproperlyConfigured):
    """A pass found only rows that this process cannot decode, though they are intact: it stopped.

    Raised after the pass's claim is committed (nothing was changed). The
    sender's configuration or code differs from that of the process that
    queued the mail (``SECRET_KEY``, a class not deployed yet): fix that.
    """


# What there is to send for a claimed message: its email; None for a big message, read at its turn;
# or why it cannot be decoded here, for it to be held back at its turn.
Readable = EmailMessage | serialization.NotDecodableHere | None


def release(message: Message) -> None:
    """Drop what a dealt-with message holds of its data, so that a claim of big messages does not keep them all."""
    cached = message.__dict__.get("_email_cache")
    if cached is not None and getattr(message, "stored_attachments", None):
        storage.unload(cached[1])  # the files read for it (the batch's lists still hold the email)
    message.remember_email(None)
    if claims.is_big(message):
        message.message_data = None


class Reader:
    """Reads the claims of one sending pass (``claim`` is its :class:`~mailer.claims.Claimer`)."""

    def __init__(self, claim: claims.Claimer) -> None:
        self.claim = claim
        self.decoded_any = False  # has this pass decoded any message?
        self.check_list = True  # must recipients be looked up in the don't-send list?

    def read(self, messages: list[Message]) -> tuple[list[tuple[Message, Readable]], list[tuple[Message, Outcome]]]:
        """The claimed messages to send, in order, each with a :data:`Readable`; and those already dealt with.

        A message held back is only passed over when the sender reaches it:
        passing over moves the next claim's start past it, and the messages
        before it that this batch does not reach must be claimed again.
        """
        in_use = getattr(messages[0], "dont_send_list_in_use", None)
        self.check_list = in_use is None or bool(in_use)  # False: the claim found the list empty
        ready: list[tuple[Message, Readable]] = []
        decided: list[tuple[Message, Outcome]] = []
        for message in messages:
            if claims.is_big(message):
                ready.append((message, None))
                continue
            self.claim.read_data(message)
            try:
                email = self.decode(message)
            except serialization.NotDecodableHere as exc:
                ready.append((message, exc))
            except serialization.UndecodableMessage as exc:
                decided.append((message, outcomes.discarded(message, exc)))
            else:
                ready.append((message, email))
        emails = [email for _message, email in ready if isinstance(email, EmailMessage)]
        blocked = {id(email) for email in remove_blocked(emails)} if emails and self.check_list else set()
        to_send = []
        for message, email in ready:
            if id(email) in blocked:
                decided.append((message, outcomes.blocked(message, email)))
            else:
                to_send.append((message, email))
        return to_send, decided

    def read_big(self, message: Message) -> EmailMessage | Outcome:
        """Read and decode a big message when its turn comes; or what becomes of it when it cannot be sent."""
        self.claim.read_data(message)
        try:
            email = self.decode(message)
        except serialization.NotDecodableHere as exc:
            return outcomes.held(message, exc)
        except serialization.UndecodableMessage as exc:
            return outcomes.discarded(message, exc)
        if self.check_list and remove_blocked([email]):
            return outcomes.blocked(message, email)
        return email

    def decode(self, message: Message) -> EmailMessage:
        """The claimed message's email, kept on the message (the error handler and the log read it again).

        Raises :class:`~mailer.serialization.NotDecodableHere` (to hold the
        message back) or :class:`~mailer.serialization.UndecodableMessage` (to discard it).
        """
        email = serialization.loads(message.message_data)
        note = standins.note_for(email)
        if note:
            logger.warning("message %s (queued on %s): %s", message.pk, message.when_added, note)
        # Attachments kept in MAILER_STORAGE are read when the message's turn comes (Pass.ready), one at a time.
        message.stored_attachments = storage.references(email)
        self.decoded_any = True
        message.remember_email(email)
        return email

    def nothing_decodes(self, claimed: int, held: int) -> QueueNotDecodable | None:
        """Why the pass must stop, when not one of the ``claimed`` messages decoded and ``held`` were held back."""
        if held < claimed or self.decoded_any:
            return None
        # Not one message this pass could read, and these are intact: the sender is misconfigured.
        return QueueNotDecodable(
            f"stopped: none of the {held} message(s) claimed could be decoded by this process, though "
            "they are intact (see the errors above): check SECRET_KEY and SECRET_KEY_FALLBACKS, and that "
            "the senders run the same code as the processes that queue mail"
        )
