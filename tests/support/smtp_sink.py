"""An SMTP server on loopback that keeps what it receives (aiosmtpd), for the ``smtp_server`` fixtures.

``SMTPSink.wait_for(n)`` waits on a condition the server notifies on each message; ``received()`` is the final
list once every sender has exited; ``slow_down()`` makes the sink take time per message, as a relay does.
"""

import asyncio
import email
import email.policy
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from tests.support.ports import start_on_a_free_port


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: email.message.EmailMessage = field(repr=False)


class SMTPSink:
    """An SMTP server on 127.0.0.1 that keeps what it receives (see the ``smtp_server`` fixture)."""

    def __init__(self):
        self.host = "127.0.0.1"
        self.port = None
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self._cond = threading.Condition()
        self._controller = None

    # aiosmtpd handler hook: runs in the server's thread for every DATA command.
    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            message=email.message_from_bytes(data, policy=email.policy.default),
        )
        with self._cond:
            self.messages.append(received)
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def _count_connection(self):
        with self._cond:
            self.connections += 1

    def start(self):
        sink = self

        class CountingController(Controller):
            def factory(self):  # called once per accepted connection
                sink._count_connection()
                return super().factory()

        def start_on(port):
            controller = CountingController(self, hostname=self.host, port=port)
            controller.start()
            self.port = port
            return controller

        self._controller = start_on_a_free_port(start_on, self.host)
        with self._cond:
            self.connections = 0  # Controller.start() opens one connection to check the server is up

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[ReceivedMessage]:
        """A copy of what arrived so far.

        Once every sender has exited, this is final: a client goes on only after the sink accepted (250) the
        message, and the sink keeps it before it answers. Count on it then instead of waiting for stragglers.
        """
        with self._cond:
            return list(self.messages)

    def wait_for(self, n, timeout=10):
        """Wait until at least ``n`` messages arrived; return a copy of them, or fail the test on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"expected {n} message(s) within {timeout}s, got {len(self.messages)}")
            return list(self.messages)


@contextmanager
def running_sink():
    sink = SMTPSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def slow_down(sink, seconds):
    """Make ``sink`` take ``seconds`` per message, as a relay does; ``sink.busy_max`` is the most at once."""
    accept = sink.handle_DATA
    sink.busy = sink.busy_max = 0

    async def slow(server, session, envelope):
        # All sessions run in the sink's one event loop thread: the counters need no lock.
        sink.busy += 1
        sink.busy_max = max(sink.busy_max, sink.busy)
        try:
            await asyncio.sleep(seconds)
            return await accept(server, session, envelope)
        finally:
            sink.busy -= 1

    sink.handle_DATA = slow  # aiosmtpd looks its hooks up on each new connection
    return sink
