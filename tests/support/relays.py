"""SMTP relays on 127.0.0.1 that misbehave on purpose, for the tests of refused recipients and timeouts.

* :class:`ScriptedRelay`: a real SMTP server (aiosmtpd) that refuses given recipients with given replies,
  takes at most ``max_recipients`` per transaction (then "452 4.5.3 Too many recipients", as Postfix's
  ``smtpd_recipient_limit`` does) and keeps every transaction it accepted.
* :class:`SilentRelay`: accepts TCP connections and never says a word (no greeting), as a relay that hangs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass

from aiosmtpd.controller import Controller

from tests.support.ports import start_on_a_free_port

TOO_MANY = "452 4.5.3 Too many recipients"


@dataclass
class Transaction:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class ScriptedRelay:
    """``refuse``: address -> reply (e.g. ``"550 5.1.1 No such user"``); ``max_recipients``: per transaction.

    ``stall_after``: after that many accepted transactions, the relay never answers a DATA again
    (``wait_for_stall()`` waits until it holds one).
    ``tls_context``: a server ``ssl.SSLContext``, to offer STARTTLS (see :func:`self_signed`).
    ``fail_data_after``: after that many accepted transactions, every DATA gets this reply (``(n, reply)``).
    """

    def __init__(
        self,
        refuse: dict[str, str] | None = None,
        max_recipients: int | None = None,
        stall_after: int | None = None,
        fail_data_after: tuple[int, str] | None = None,
        tls_context=None,
    ):
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.refuse = {address.lower(): reply for address, reply in (refuse or {}).items()}
        self.max_recipients = max_recipients
        self.stall_after = stall_after
        self.fail_data_after = fail_data_after
        self.tls_context = tls_context  # an ssl.SSLContext: the relay offers STARTTLS
        self.transactions: list[Transaction] = []
        self.stalled = 0  # DATA commands received and left unanswered (``stall_after``)
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    # aiosmtpd handler hooks, run in the server's thread.
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.refuse.get(address.lower())
        if reply is not None:
            return reply
        if self.max_recipients is not None and len(envelope.rcpt_tos) >= self.max_recipients:
            return TOO_MANY
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.stall_after is not None and len(self.transactions) >= self.stall_after:
            with self._cond:
                self.stalled += 1
                self._cond.notify_all()
            await asyncio.sleep(3600)  # the scripted stall: never answer this DATA
        if self.fail_data_after is not None and len(self.transactions) >= self.fail_data_after[0]:
            return self.fail_data_after[1]
        with self._cond:
            self.transactions.append(Transaction(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            self._cond.notify_all()
        return "250 2.0.0 Message accepted for delivery"

    def wait_for(self, n: int, timeout: float = 10) -> None:
        """Wait until ``n`` transactions were accepted."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.transactions) >= n, timeout):
                raise AssertionError(f"expected {n} transaction(s) within {timeout}s, got {len(self.transactions)}")

    def wait_for_stall(self, n: int = 1, timeout: float = 10) -> None:
        """Wait until ``n`` messages were received whole and left without a reply (``stall_after``).

        From then on the sender is waiting for the reply to its DATA, and waits for ever.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self.stalled >= n, timeout):
                raise AssertionError(f"expected {n} stalled DATA within {timeout}s, got {self.stalled}")

    def received(self) -> list[str]:
        """Every recipient of every accepted transaction, in order (an address twice if it got the mail twice)."""
        with self._cond:
            return [address for transaction in self.transactions for address in transaction.rcpt_tos]

    def start(self) -> ScriptedRelay:
        def start_on(port: int) -> Controller:
            controller = Controller(self, hostname=self.host, port=port, tls_context=self.tls_context)
            controller.start()
            self.port = port
            return controller

        self._controller = start_on_a_free_port(start_on, self.host)
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> ScriptedRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SilentRelay:
    """Accepts every TCP connection and holds it open without a greeting; counts the connections."""

    def __init__(self):
        self.host = "127.0.0.1"
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(50)
        self.port = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-relay")
        self._running = True

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._cond:
                self.accepted.append(conn)
                self._cond.notify_all()

    @property
    def connections(self) -> int:
        with self._cond:
            return len(self.accepted)

    def wait_for_connections(self, n: int, timeout: float = 15) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.accepted) >= n, timeout):
                raise AssertionError(f"expected {n} connection(s) within {timeout}s, got {len(self.accepted)}")

    def start(self) -> SilentRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._listener.close()
        with self._cond:
            for conn in self.accepted:
                conn.close()

    def __enter__(self) -> SilentRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def send_through(settings, relay, alias: str = "relay", **options) -> None:
    """Make Django's SMTP backend, pointed at ``relay``, the queue's real sender (with ``MAILERS`` on 6.1+,
    as the alias ``alias``). Also what the ``smtp_settings`` fixture does with the SMTP sink.

    ``options`` are further backend options (``timeout=...``), as ``EMAIL_<NAME>`` settings or ``OPTIONS``.
    """
    from mailer.routing import mailers_configured

    if mailers_configured():
        settings.MAILERS = {
            **settings.MAILERS,
            alias: {
                "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "OPTIONS": {"host": relay.host, "port": relay.port, "use_tls": False, **options},
            },
        }
        settings.MAILER_DELIVER_USING = alias
    else:
        settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = relay.host
        settings.EMAIL_PORT = relay.port
        settings.EMAIL_USE_TLS = False
        for name, value in options.items():
            setattr(settings, f"EMAIL_{name.upper()}", value)


def self_signed(directory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a throw-away certificate for 127.0.0.1 (by ``openssl``); a client one trusting it."""
    cert, key = os.path.join(directory, "relay.crt"), os.path.join(directory, "relay.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=cert)
    return server, client
