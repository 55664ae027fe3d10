"""Fixtures shared by the whole test suite."""

import asyncio
import email
import email.policy
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import hypothesis
import pytest
from aiosmtpd.controller import Controller

from mailer.delivery import mailers_configured
from tests.support import backends
from tests.support.procs import manage

# Database round trips make run times uneven; a deadline would only make the suite flaky.
hypothesis.settings.register_profile("mailer", deadline=None, database=None)
hypothesis.settings.load_profile("mailer")


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

        for attempt in range(5):
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
            self._controller = CountingController(self, hostname=self.host, port=self.port)
            try:
                self._controller.start()
                break
            except OSError:  # someone took the port between bind() and start()
                if attempt == 4:
                    raise
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
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {n} message(s) within {timeout}s, got {len(self.messages)}")
                self._cond.wait(remaining)
            return list(self.messages)


@pytest.fixture(scope="session", autouse=True)
def _queue_through_mailer(django_test_environment):
    """Django's test setup replaces EMAIL_BACKEND (or every MAILERS entry) with locmem; put the queue back.

    What really sends is ``MAILER_EMAIL_BACKEND``: locmem, so ``mail.outbox`` holds what ``send_all()`` sent.
    """
    from django.conf import settings

    from tests import settings as test_settings

    if hasattr(test_settings, "MAILERS"):
        settings.MAILERS = test_settings.MAILERS
    else:
        settings.EMAIL_BACKEND = test_settings.EMAIL_BACKEND


@contextmanager
def running_sink():
    sink = SMTPSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def smtp_server():
    """A running SMTP sink: ``.host``, ``.port``, ``.messages``, ``.connections``, ``.wait_for(n)``."""
    with running_sink() as sink:
        yield sink


@pytest.fixture
def second_smtp_server():
    """Another SMTP sink, for tests with two relays."""
    with running_sink() as sink:
        yield sink


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


@pytest.fixture
def slow_smtp_server(smtp_server):
    """The SMTP sink taking a few milliseconds per message, so that senders overlap."""
    return slow_down(smtp_server, 0.004)


@pytest.fixture
def smtp_settings(settings, smtp_server):
    """Make the queue's real sender Django's SMTP backend, pointed at ``smtp_server``."""
    if mailers_configured():
        settings.MAILERS = {
            **settings.MAILERS,
            "smtp": {
                "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "OPTIONS": {"host": smtp_server.host, "port": smtp_server.port, "use_tls": False},
            },
        }
        settings.MAILER_DELIVER_USING = "smtp"
    else:
        settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = smtp_server.host
        settings.EMAIL_PORT = smtp_server.port
        settings.EMAIL_USE_TLS = False
    return smtp_server


@pytest.fixture(autouse=True)
def lock_path(settings, tmp_path):
    """Every test gets its own ``MAILER_LOCK_PATH`` under ``tmp_path``, so no lock file lands in the repo."""
    path = str(tmp_path / "send_mail")
    settings.MAILER_LOCK_PATH = path
    return path


@pytest.fixture
def failures(settings):
    """Make ``FailingBackend`` the real sender; the test fills the returned dict (subject -> exception).

    Also empties ``backends.HANDLED``, what the recording error handlers saw.
    """
    settings.MAILER_EMAIL_BACKEND = f"{backends.HERE}.FailingBackend"
    backends.FAILURES.clear()
    backends.HANDLED.clear()
    yield backends.FAILURES
    backends.FAILURES.clear()
    backends.HANDLED.clear()


@pytest.fixture
def sqlite_project(tmp_path, smtp_server):
    """A migrated SQLite file database for ``tests.project``, sending to ``smtp_server``.

    The value is the env for ``manage`` plus ``"db"``, the file (see ``tests/support/sqlite_project.py``).
    """
    db = tmp_path / "project.sqlite3"
    env = {
        "MAILER_TEST_DB": "sqlite",
        "MAILER_TEST_DB_NAME": str(db),
        "MAILER_TEST_SMTP_PORT": smtp_server.port,
        "MAILER_TEST_LOCK_PATH": str(tmp_path / "send_mail"),
    }
    done = manage("migrate", "--no-input", env=env)
    assert done.returncode == 0, done.stderr
    return {**env, "db": str(db)}
