"""What Django's SMTP backend leaves out: a default timeout, refused recipients, sockets a signal can cut.

Django's ``django.core.mail.backends.smtp.EmailBackend`` (and its subclasses)
gets three things here, through :func:`prepare`, called by
:meth:`mailer.routing.Route.open` before the connection is opened:

* ``MAILER_EMAIL_TIMEOUT`` as its ``timeout`` when the project set none, so a
  relay that never answers cannot hang a sender for ever;
* an ``smtplib`` connection class whose ``sendmail()`` sends again, in more
  transactions, to the recipients refused as "too many recipients" (452,
  4.5.3) and records every other refused recipient with the relay's reply
  (Django's backend ignores what ``sendmail()`` returns): read them with
  :func:`capturing` around the delivery;
* the sockets of those connections listed, so that :func:`interrupt` (from a
  signal handler) can shut them down and end a delivery blocked on a silent
  relay in any thread.

The backend instance gets a subclass of its own class made here (its
``connection_class`` is a property, which an instance cannot override), so
``isinstance()`` checks and every option keep working.
"""

from __future__ import annotations

import copy
import functools
import smtplib
import socket
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

from mailer import failures
from mailer.conf import mailer_settings

# A relay that took some recipients and refused the others with this code takes them in a new transaction.
TOO_MANY_RECIPIENTS = 452
# Transactions for one message at most: with Postfix's limit of 1000 recipients per transaction, 100 000.
MAX_TRANSACTIONS = 100


@dataclass(frozen=True)
class Refusal:
    """A recipient the relay did not take: its SMTP reply code (``None``: the connection failed) and text."""

    address: str
    code: int | None
    reply: str

    @property
    def failure(self) -> failures.Failure:
        """What the refusal means (:func:`mailer.failures.from_reply`)."""
        return failures.from_reply(self.code, self.reply)

    @property
    def transient(self) -> bool:
        """Might a later attempt succeed (a 4xx reply, or no reply at all)?"""
        return self.failure.transient

    def __str__(self) -> str:
        return f"{self.address}: {self.code} {self.reply}" if self.code is not None else f"{self.address}: {self.reply}"


class Capture:
    """What the relay refused during one delivery: a context manager that collects them for this thread."""

    def __init__(self) -> None:
        self.refusals: list[Refusal] = []
        self.transactions = 0
        self._previous: Capture | None = None

    def __enter__(self) -> Capture:
        self._previous = getattr(_local, "capture", None)
        _local.capture = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        _local.capture = self._previous


_local = threading.local()


def capturing() -> Capture:
    """Collect the refusals of the deliveries this thread makes inside the ``with`` block."""
    return Capture()


def _decode(reply: Any) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _too_many(code: int, reply: Any) -> bool:
    return code == TOO_MANY_RECIPIENTS or _decode(reply).startswith("4.5.3")


class RecordingSMTP:
    """Mixed into ``smtplib.SMTP`` (or ``SMTP_SSL``): lists its socket, sends to every recipient it can."""

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        _sockets.add(sock)
        return sock

    def starttls(self, *args, **kwargs):
        # The plain socket is detached into a new TLS one: list that one, or interrupt() could not reach it.
        reply = super().starttls(*args, **kwargs)
        if self.sock is not None:
            _sockets.add(self.sock)
        return reply

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        """Send to ``to_addrs`` in as many transactions as the relay needs; the refused ones, as smtplib does.

        The first transaction behaves as smtplib's (every recipient refused:
        ``SMTPRecipientsRefused``, nothing sent). Once some recipients have the
        message, nothing raises any more: a failure of a later transaction
        makes its recipients refused, so the message is never sent again to
        those who have it.
        """
        capture = getattr(_local, "capture", None)
        pending = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        refused: dict[str, tuple[int | None, Any]] = {}
        for number in range(MAX_TRANSACTIONS):
            try:
                result = super().sendmail(from_addr, pending, msg, mail_options, rcpt_options)
            except smtplib.SMTPRecipientsRefused as exc:
                if number == 0:
                    raise
                # None of these took: keep the replies, stop. A 421 ends the transaction at once, naming only
                # the recipients smtplib got to (the 421 one last): those it did not get to are refused with it.
                last = list(exc.recipients.values())[-1] if exc.recipients else (None, "no reply")
                refused.update({address: exc.recipients.get(address, last) for address in pending})
                break
            except (smtplib.SMTPResponseException, OSError) as exc:
                if number == 0:
                    raise
                code = getattr(exc, "smtp_code", None)
                reply = getattr(exc, "smtp_error", None) or str(exc) or type(exc).__name__
                refused.update({address: (code, reply) for address in pending})
                break
            finally:
                if capture is not None:
                    capture.transactions += 1
            again = [address for address, (code, reply) in result.items() if _too_many(code, reply)]
            refused.update({address: reply for address, reply in result.items() if address not in again})
            if not again:
                break
            pending = again
        else:
            refused.update({address: result[address] for address in pending})
        if capture is not None:
            capture.refusals.extend(
                Refusal(address, code, _decode(reply)) for address, (code, reply) in refused.items()
            )
        return refused


@functools.cache
def _recording_class(smtp_class: type) -> type:
    return type(smtp_class.__name__, (RecordingSMTP, smtp_class), {"__module__": __name__})


@functools.cache
def _prepared_class(backend_class: type) -> type:
    class Prepared(backend_class):
        @property
        def connection_class(self):
            return _recording_class(super().connection_class)

    Prepared.__name__ = backend_class.__name__
    Prepared.__qualname__ = backend_class.__qualname__
    Prepared.__module__ = backend_class.__module__
    Prepared.mailer_prepared = True
    return Prepared


def is_smtp(connection: BaseEmailBackend) -> bool:
    """Is ``connection`` Django's SMTP backend (or a subclass of it)?"""
    return isinstance(connection, SMTPBackend)


def prepare(connection: BaseEmailBackend) -> BaseEmailBackend:
    """Give an SMTP backend (not opened yet) the default timeout and the recording connection class."""
    if not isinstance(connection, SMTPBackend):
        return connection
    if connection.timeout is None:
        connection.timeout = default_timeout()
    if not getattr(connection, "mailer_prepared", False):
        connection.__class__ = _prepared_class(type(connection))
    return connection


def default_timeout() -> float | None:
    """``MAILER_EMAIL_TIMEOUT`` (seconds; ``None``: none); ``ImproperlyConfigured`` for anything else.

    Raised while a connection opens, that stops the run with the message left
    queued (not deferred as a failure of the message).
    """
    timeout = mailer_settings.EMAIL_TIMEOUT
    if timeout is not None and not valid_timeout(timeout):
        raise ImproperlyConfigured(
            f"MAILER_EMAIL_TIMEOUT is {timeout!r}; it must be a number of seconds greater than 0, or None."
        )
    return timeout


def valid_timeout(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


# Seconds a delivery in progress may still take after a stop request before its connection is cut.
INTERRUPT_GRACE = 2.0

# Every socket of a recording connection still open in this process.
_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def interrupt_soon(grace: float | None = None) -> None:
    """:func:`interrupt` after ``grace`` seconds (default :data:`INTERRUPT_GRACE`), from a timer thread.

    For a signal handler: deliveries that finish normally in the meantime
    are recorded as sent (cutting one after the relay took the message
    would have it sent again); those still waiting for a relay are cut.
    """
    timer = threading.Timer(INTERRUPT_GRACE if grace is None else grace, interrupt)
    timer.daemon = True
    timer.start()


def interrupt() -> int:
    """Shut down every socket of a delivery in progress (safe in a signal handler); how many.

    A thread blocked reading from the relay gets an end of file at once:
    its delivery fails with ``SMTPServerDisconnected``.
    """
    count = 0
    try:
        sockets = list(_sockets)
    except RuntimeError:  # another thread added one meanwhile
        sockets = list(_sockets)
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
            count += 1
        except OSError:
            pass  # closed already
    return count


def describe(refusals: list[Refusal]) -> str:
    """The log text for ``refusals``: a line per recipient, ``refused <address>: <code> <reply>``."""
    return "\n".join(f"refused {refusal}" for refusal in refusals)


def _plain(address: str) -> str:
    """An address without its display name, lower case, its domain as IDNA: what the relay was given."""
    address = parseaddr(address)[1].lower()
    local, at, domain = address.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local}{at}{domain}"


def refuses_all(email: EmailMessage, refused: Iterable[str]) -> bool:
    """Do the addresses ``refused`` (an ``SMTPRecipientsRefused``'s) name every recipient of ``email``?

    Not when the relay answered 421 part way: smtplib then raises naming only the recipients it got to.
    """
    return {_plain(address) for address in email.recipients()} <= {_plain(address) for address in refused}


def refused_part(email: EmailMessage, refusals: list[Refusal]) -> EmailMessage:
    """A copy of ``email`` addressed to the refused recipients only (to, cc and bcc alike)."""
    refused = {_plain(refusal.address) for refusal in refusals}
    part = copy.copy(email)
    part.to = [address for address in email.to if _plain(address) in refused]
    part.cc = [address for address in email.cc if _plain(address) in refused]
    part.bcc = [address for address in email.bcc if _plain(address) in refused]
    return part
