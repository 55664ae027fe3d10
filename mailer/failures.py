"""What a failed delivery means, and when to try again: the one home of the retry rules.

:func:`classify` reads what the backend raised and says whether another
attempt might succeed (*transient*: "451 try again later", "421 service not
available", a dropped connection, a timeout, an ESP's HTTP 429 or 5xx) or not
(*permanent*: "550 5.1.1 no such user", "552 message too large", an address
the ESP calls invalid). What it does not know stays unknown (``None``): the
error policy (:mod:`mailer.outcomes`) treats that as a poison message, as
before. ``MAILER_FAILURE_CLASSIFIER`` lets a project decide first.

:func:`retry_delay` is the backoff: after ``n`` failed attempts the next one
waits a random time between 0 and ``min(MAILER_RETRY_MAX_DELAY,
MAILER_RETRY_DELAY * 2 ** (n - 1))`` seconds ("full jitter": senders that
failed together do not come back together).
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import random
import re
import smtplib
from collections.abc import Callable
from typing import Any, Literal

from django.utils import timezone
from django.utils.module_loading import import_string

from mailer.conf import mailer_settings

TRANSIENT: Literal["transient"] = "transient"
PERMANENT: Literal["permanent"] = "permanent"
Kind = Literal["transient", "permanent"]

# RFC 3463 enhanced status codes of a mailbox that does not exist (or no longer does): "bad destination
# mailbox address", "recipient address has null MX" and "mailbox disabled, not accepting messages".
USER_UNKNOWN = frozenset({"5.1.1", "5.1.10", "5.2.1"})

_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_THROTTLING = re.compile(r"throttl|rate limit|too many (messages|connections)|slow down", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Failure:
    """What one failed delivery attempt means.

    ``kind`` is ``"transient"``, ``"permanent"`` or ``None`` (not known).
    ``code`` is the SMTP reply code or the HTTP status, if there was one;
    ``enhanced`` the RFC 3463 status ("5.1.1") found in the reply.
    ``throttled`` says that the relay asked the sender to slow down, and ``retry_after`` for how many
    seconds, when it said so (an HTTP ``Retry-After``).
    """

    kind: Kind | None
    reason: str
    code: int | None = None
    enhanced: str | None = None
    throttled: bool = False
    retry_after: float | None = None

    @property
    def transient(self) -> bool:
        return self.kind == TRANSIENT

    @property
    def permanent(self) -> bool:
        return self.kind == PERMANENT

    @property
    def user_unknown(self) -> bool:
        """A permanent refusal saying the mailbox does not exist (see ``MAILER_DONT_SEND_UNKNOWN_RECIPIENTS``)."""
        return self.permanent and self.enhanced in USER_UNKNOWN


def classify(exc: BaseException) -> Failure:
    """The :class:`Failure` that ``exc``, raised by a backend's ``send_messages()``, stands for.

    ``MAILER_FAILURE_CLASSIFIER``, if set, is asked first; when it returns
    ``None`` (or something else than "transient" or "permanent") the
    built-in rules decide.
    """
    failure = _builtin(exc)
    custom = _custom_classifier()
    if custom is not None:
        kind = custom(exc)
        if kind in (TRANSIENT, PERMANENT) and kind != failure.kind:
            return dataclasses.replace(failure, kind=kind)
    return failure


def from_reply(code: int | None, reply: str) -> Failure:
    """The :class:`Failure` of one SMTP reply (``code`` ``None``: no reply at all, the connection failed)."""
    reply = " ".join(str(reply).split())
    reason = f"{code} {reply}" if code is not None else reply
    enhanced = _ENHANCED.search(reply)
    status = enhanced.group(1) if enhanced else None
    if code is None or 400 <= code < 500:
        throttled = code == 454 or bool(_THROTTLING.search(reply))
        return Failure(TRANSIENT, reason, code, status, throttled)
    if 500 <= code < 600:
        return Failure(PERMANENT, reason, code, status)
    return Failure(None, reason, code, status)


def _builtin(exc: BaseException) -> Failure:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # Every recipient refused: transient if any of them may take it later (outcomes.py retries those alone).
        failures = [from_reply(code, _text(reply)) for code, reply in exc.recipients.values()]
        reason = "; ".join(
            f"{address}: {failure.reason}" for address, failure in zip(exc.recipients, failures, strict=True)
        )
        transient = [failure for failure in failures if failure.transient]
        chosen = transient[0] if transient else (failures[0] if failures else Failure(PERMANENT, ""))
        return Failure(chosen.kind or PERMANENT, reason, chosen.code, chosen.enhanced, chosen.throttled)
    if isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPConnectError, smtplib.SMTPHeloError)):
        # The relay refuses the sender, not this message: fixing the credentials or the relay sends it.
        failure = from_reply(exc.smtp_code, _text(exc.smtp_error))
        return Failure(TRANSIENT, failure.reason, failure.code, failure.enhanced, failure.throttled)
    if isinstance(exc, smtplib.SMTPResponseException):  # SMTPSenderRefused, SMTPDataError and other replies
        return from_reply(exc.smtp_code, _text(exc.smtp_error))
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPNotSupportedError, OSError)):
        # A dropped connection, a refused one, a timeout, a TLS failure: nothing the message did.
        return Failure(TRANSIENT, _describe(exc))
    anymail = _anymail_failure(exc)
    if anymail is not None:
        return anymail
    return Failure(None, _describe(exc))


def _anymail_failure(exc: BaseException) -> Failure | None:
    """django-anymail's exceptions, when it is installed (it is optional)."""
    try:
        from anymail import exceptions as anymail
    except ImportError:
        return None
    if isinstance(exc, (anymail.AnymailRecipientsRefused, anymail.AnymailInvalidAddress)):
        return Failure(PERMANENT, _describe(exc))
    if isinstance(exc, anymail.AnymailAPIError):
        status = getattr(exc, "status_code", None)
        if status is None:  # a network error; or an SDK's error without a status (SES's "Throttling")
            reason = _describe(exc)
            return Failure(TRANSIENT, reason, throttled=bool(_THROTTLING.search(reason)))
        if status in (401, 403, 408, 429) or status >= 500:
            # Busy, down, or refusing our credentials: nothing the message did.
            retry_after = _retry_after(getattr(exc, "response", None)) if status == 429 else None
            return Failure(TRANSIENT, _describe(exc), status, throttled=status == 429, retry_after=retry_after)
        return Failure(PERMANENT, _describe(exc), status)
    if isinstance(exc, (anymail.AnymailUnsupportedFeature, anymail.AnymailSerializationError)):
        return Failure(PERMANENT, _describe(exc))  # this message asks for what the ESP cannot do
    return None


def _retry_after(response: Any) -> float | None:
    """The seconds an HTTP response's ``Retry-After`` header asks for (a number, or an HTTP date), if any."""
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _describe(exc: BaseException) -> str:
    try:
        text = " ".join(str(exc).split())
    except Exception:  # a third-party exception whose __str__ fails (anymail's, given a status but no response)
        text = " ".join(repr(exc.args).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _custom_classifier() -> Callable[[BaseException], str | None] | None:
    path = mailer_settings.FAILURE_CLASSIFIER
    if not path:
        return None
    return path if callable(path) else import_string(path)


def retry_cap(attempts: int) -> float:
    """The longest wait after ``attempts`` failed attempts: ``min(MAX_DELAY, DELAY * 2 ** (attempts - 1))``."""
    delay, largest = mailer_settings.RETRY_DELAY, mailer_settings.RETRY_MAX_DELAY
    exponent = max(0, attempts - 1)
    if exponent >= 64 or delay * 2**exponent >= largest:  # no float overflow after very many attempts
        return float(largest)
    return float(delay * 2**exponent)


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``attempts`` failed attempts: uniform between 0 and :func:`retry_cap`."""
    return (rng or random).uniform(0, retry_cap(attempts))


def next_attempt(attempts: int) -> datetime.datetime:
    """When a message that failed ``attempts`` times may be tried again."""
    return timezone.now() + datetime.timedelta(seconds=retry_delay(attempts))


def attempts_left(attempts: int) -> bool:
    """May a message that failed ``attempts`` times transiently be tried again (``MAILER_RETRY_MAX_ATTEMPTS``)?"""
    return attempts < mailer_settings.RETRY_MAX_ATTEMPTS
