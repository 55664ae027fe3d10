"""SMTP relays on 127.0.0.1 that misbehave on purpose, for the tests of refused recipients and timeouts.

* :class:`ScriptedRelay`: a real SMTP server (aiosmtpd) that refuses given recipients with given replies,
  takes at most ``max_recipients`` per transaction (then "452 4.5.3 Too many recipients", as Postfix's
  ``smtpd_recipient_limit`` does) and keeps every transaction it accepted.
* :class:`FlakyRelay`: a :class:`ScriptedRelay` that also refuses at random (451/421, or drops the connection),
  plays scripted sequences per recipient ("451 twice then accept"), refuses the first DATA commands
  ("454 4.7.0 Throttling") or every transaction for some seconds, and records every attempt, accepted or not,
  with its arrival times and Message-ID.
* :class:`SilentRelay`: accepts TCP connections and never says a word (no greeting), as a relay that hangs.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

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

    def _controller_class(self) -> type[Controller]:
        return Controller

    def start(self) -> ScriptedRelay:
        controller_class = self._controller_class()

        def start_on(port: int) -> Controller:
            controller = controller_class(self, hostname=self.host, port=port, tls_context=self.tls_context)
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


GREYLISTED = "451 4.3.0 Try again later"
UNAVAILABLE = "421 4.3.2 Service not available"
THROTTLED = "454 4.7.0 Throttling"
NO_SUCH_USER = "550 5.1.1 No such user"
DROP = "drop"  # a scripted step: close the connection without a word
STAGES = ("MAIL", "RCPT", "DATA")


@dataclass
class Attempt:
    """One mail transaction at a :class:`FlakyRelay`, accepted or not, from its MAIL FROM on."""

    at: float  # time.monotonic() when its MAIL FROM arrived
    wall: float  # time.time() then: to compare with the times a sender stores (a message's not_before)
    mail_from: str
    rcpt_tos: list[str] = field(default_factory=list)  # every recipient offered, refused or not
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> the refusal it got at RCPT
    message_id: str | None = None  # the data's Message-ID header, once the data arrived
    data_at: float | None = None  # time.monotonic() when its data arrived whole (before the relay answered)
    stage: str = "MAIL"  # the last command the relay answered or hung up on: MAIL, RCPT or DATA
    reply: str | None = None  # the last reply of the transaction; None when the relay dropped the connection
    dropped: bool = False  # the connection was closed with no reply (a 421 closes it too, after the reply)
    accepted: bool = False  # DATA got 250: the relay has the message

    @property
    def ended(self) -> bool:
        """Accepted, dropped, or the last reply a refusal (of its only recipient, at RCPT)."""
        return self.accepted or self.dropped or (self.reply is not None and not self.reply.startswith("250"))

    def copy(self) -> Attempt:
        return Attempt(**{**self.__dict__, "rcpt_tos": list(self.rcpt_tos), "refused": dict(self.refused)})


class FlakyRelay(ScriptedRelay):
    """A :class:`ScriptedRelay` that refuses, as real relays do, and records every attempt (:class:`Attempt`).

    * ``refuse_rate``: the fraction of transactions refused at random with one of ``refusals`` (a 421 closes
      the connection after its reply, as relays do); ``drop_rate``: the fraction on which the relay closes the
      connection without a reply. Each transaction's fate is drawn at its MAIL FROM from ``random.Random(seed)``,
      and strikes at one of ``stages`` (MAIL, RCPT or DATA, drawn too); at RCPT it strikes every recipient.
    * ``script``: recipient -> the replies its next transactions get at RCPT, one per transaction, then 250:
      ``[GREYLISTED, GREYLISTED]`` is "451 twice, then accepted". A step may be ``None`` (accepted), ``DROP``,
      or ``("DATA", reply)``: the transaction's DATA gets that reply. Transactions a random fate strikes
      consume no step.
    * ``fail_data_first``: ``(n, reply)``: the first ``n`` DATA commands get ``reply`` (``THROTTLED``), then 250.
    * ``refuse_for``: ``(seconds, reply)``: every MAIL FROM gets ``reply`` (``THROTTLED``) for ``seconds`` from
      the first one on (:attr:`refusing_since`), then the relay takes mail again.
    * ``slow``: recipient -> seconds the relay takes before it answers each RCPT of that recipient.
    * ``refuse`` (recipients refused at every RCPT, as ``"550 5.1.1 ..."``) and the other options: as
      :class:`ScriptedRelay`, whose ``transactions`` still hold the accepted ones.

    Every change is notified on one condition: :meth:`wait_until` waits for a state of the relay.
    """

    def __init__(
        self,
        *,
        refuse_rate: float = 0.0,
        drop_rate: float = 0.0,
        refusals: Sequence[str] = (GREYLISTED, UNAVAILABLE),
        stages: Sequence[str] = STAGES,
        seed: int = 14,
        script: dict[str, Iterable] | None = None,
        fail_data_first: tuple[int, str] | None = None,
        slow: dict[str, float] | None = None,
        refuse_for: tuple[float, str] | None = None,
        **options,
    ):
        super().__init__(**options)
        assert 0 <= refuse_rate + drop_rate <= 1 and set(stages) <= set(STAGES), (refuse_rate, drop_rate, stages)
        self.refuse_rate = refuse_rate
        self.drop_rate = drop_rate
        self.refusals = tuple(refusals)
        self.stages = tuple(stages)
        self.random = random.Random(seed)
        self.script = {address.lower(): list(steps) for address, steps in (script or {}).items()}
        self.fail_data_first = fail_data_first
        self.slow = {address.lower(): seconds for address, seconds in (slow or {}).items()}
        self.refuse_for = refuse_for
        self.refusing_since: float | None = None  # time.monotonic() of the first MAIL FROM, with refuse_for
        self.attempts: list[Attempt] = []
        self.data_commands = 0  # DATA commands whose data arrived, answered or not
        self.connections = 0  # SMTP connections accepted

    # --- aiosmtpd handler hooks, run in the server's thread ---------------------------------------------

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        attempt = Attempt(at=time.monotonic(), wall=time.time(), mail_from=address)
        with self._cond:
            self.attempts.append(attempt)
            envelope.attempt = attempt
            envelope.fate = self._draw()
            envelope.data_reply = None
            if self.refuse_for is not None and self.refusing_since is None:
                self.refusing_since = attempt.at
            refusing = self.refuse_for is not None and attempt.at - self.refusing_since < self.refuse_for[0]
            self._cond.notify_all()
        if refusing:
            return await self._answer(server, attempt, "MAIL", self.refuse_for[1])
        if envelope.fate and envelope.fate[0] == "MAIL":
            return await self._answer(server, attempt, "MAIL", envelope.fate[1])
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return await self._answer(server, attempt, "MAIL", "250 2.1.0 OK")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        attempt: Attempt = envelope.attempt
        with self._cond:
            attempt.rcpt_tos.append(address)
        if address.lower() in self.slow:
            await asyncio.sleep(self.slow[address.lower()])  # the scripted slowness: other sessions go on
        if envelope.fate and envelope.fate[0] == "RCPT":
            return await self._answer(server, attempt, "RCPT", envelope.fate[1], address)
        step = self._next_step(address)
        if isinstance(step, tuple):
            stage, envelope.data_reply = step
            assert stage == "DATA", step
        elif step is not None:
            return await self._answer(server, attempt, "RCPT", None if step == DROP else step, address)
        reply = await super().handle_RCPT(server, session, envelope, address, rcpt_options)
        return await self._answer(server, attempt, "RCPT", reply, address)

    async def handle_DATA(self, server, session, envelope):
        attempt: Attempt = envelope.attempt
        data = envelope.original_content or envelope.content
        with self._cond:
            self.data_commands += 1
            attempt.data_at = time.monotonic()
            attempt.message_id = BytesHeaderParser().parsebytes(data)["Message-ID"]
            throttled = self.fail_data_first is not None and self.data_commands <= self.fail_data_first[0]
        if envelope.fate and envelope.fate[0] == "DATA":
            return await self._answer(server, attempt, "DATA", envelope.fate[1])
        if throttled:
            return await self._answer(server, attempt, "DATA", self.fail_data_first[1])
        if envelope.data_reply is not None:
            return await self._answer(server, attempt, "DATA", envelope.data_reply)
        reply = await super().handle_DATA(server, session, envelope)
        return await self._answer(server, attempt, "DATA", reply)

    def _draw(self) -> tuple[str, str | None] | None:
        """A transaction's random fate: None (spared), else (stage, reply), the reply None for a drop."""
        draw = self.random.random()
        if draw < self.drop_rate:
            return self.random.choice(self.stages), None
        if draw < self.drop_rate + self.refuse_rate:
            return self.random.choice(self.stages), self.random.choice(self.refusals)
        return None

    def _next_step(self, address: str):
        with self._cond:
            steps = self.script.get(address.lower())
            return steps.pop(0) if steps else None

    async def _answer(self, server, attempt: Attempt, stage: str, reply: str | None, address: str | None = None):
        """Record ``reply`` to ``stage`` and return it for aiosmtpd to send; ``None`` drops the connection,
        and a 421 is sent and then the connection closed."""
        with self._cond:
            attempt.stage, attempt.reply = stage, reply
            attempt.dropped = reply is None
            attempt.accepted = stage == "DATA" and reply is not None and reply.startswith("250")
            if address is not None and reply is not None and not reply.startswith("250"):
                attempt.refused[address] = reply
            self._cond.notify_all()
        if reply is not None and not reply.startswith("421"):
            return reply
        if reply is not None:
            await server.push(reply)
        server.transport.close()
        # Closing the transport cancels this session's task (aiosmtpd's connection_lost()): wait for that.
        await asyncio.Event().wait()

    def _controller_class(self) -> type[Controller]:
        relay = self

        class CountingController(Controller):
            def factory(self):  # called once per accepted connection
                with relay._cond:
                    relay.connections += 1
                return super().factory()

        return CountingController

    def start(self) -> FlakyRelay:
        super().start()
        with self._cond:
            self.connections = 0  # Controller.start() opens one connection to check the server is up
        return self

    # --- What the tests look at -------------------------------------------------------------------------

    def snapshot(self) -> list[Attempt]:
        """A copy of every attempt so far, in arrival order (final once every sender has exited)."""
        with self._cond:
            return [attempt.copy() for attempt in self.attempts]

    def attempts_to(self, address: str) -> list[Attempt]:
        """A copy of the attempts that offered ``address`` at RCPT, in arrival order."""
        with self._cond:
            return [a.copy() for a in self.attempts if address.lower() in (r.lower() for r in a.rcpt_tos)]

    def delivered_to(self, address: str) -> int:
        """How many accepted transactions had ``address`` among their accepted recipients."""
        return sum(1 for rcpt in self.received() if rcpt.lower() == address.lower())

    def wait_until(
        self, predicate: Callable[[FlakyRelay], object], timeout: float = 10, message: str | Callable[[], str] = ""
    ) -> object:
        """Wait until ``predicate(relay)`` is true (checked on each change), and return its value.

        The predicate runs under the relay's lock (reentrant: it may call the methods above).
        """
        with self._cond:
            result = self._cond.wait_for(lambda: predicate(self), timeout)
            if not result:
                text = message() if callable(message) else message
                raise AssertionError(f"{text or 'relay state not reached'} (waited {timeout}s): {self.summary()}")
            return result

    def wait_for_attempts(self, address: str, n: int, timeout: float = 10) -> list[Attempt]:
        """Wait until ``n`` attempts offered ``address`` and the last of them was answered; return them all."""

        def done(relay: FlakyRelay) -> list[Attempt]:
            attempts = relay.attempts_to(address)
            return attempts if len(attempts) >= n and attempts[n - 1].ended else []

        return self.wait_until(done, timeout, f"{n} attempt(s) to {address}")

    def summary(self) -> str:
        with self._cond:
            accepted = sum(1 for a in self.attempts if a.accepted)
            dropped = sum(1 for a in self.attempts if a.dropped)
            return (
                f"{len(self.attempts)} attempts, {accepted} accepted, {dropped} dropped, "
                f"{self.connections} connections, {self.data_commands} DATA"
            )


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
