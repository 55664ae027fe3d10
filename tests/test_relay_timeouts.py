"""A relay that does not answer: a default timeout, one timeout per pass per relay, and SIGTERM mid-delivery.

The senders run as real child processes of ``tests.project`` (SQLite file, or a fresh database of the
server under test), sending to relays on loopback (tests/support/relays.py) that accept TCP and never
greet, or stall after some messages.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import connections

from mailer import smtp
from mailer.routing import mailers_configured, route
from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.project_db import send_mail_in_project
from tests.support.relays import ScriptedRelay, SilentRelay, send_through
from tests.support.senders import SenderProcess
from tests.support.services import fresh_database

COUNT = (
    "from mailer.models import Message, MessageLog\n"
    "tried = Message.objects.non_deferred().filter(attempts__gt=0)\n"
    "print(Message.objects.non_deferred().count() - tried.count(), tried.count(),"
    " Message.objects.deferred().count(),"
    " MessageLog.objects.filter(result='1').count(), MessageLog.objects.filter(result='3').count())\n"
)


class Project:
    def __init__(self, tmp_path, db_name: str, relay_port: int):
        self.tmp_path = tmp_path
        self.lock = str(tmp_path / "send_mail")
        self.env = {
            "MAILER_TEST_DB_NAME": db_name,
            "MAILER_TEST_SMTP_PORT": relay_port,
            "MAILER_TEST_LOCK_PATH": self.lock,
            "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.2",
        }
        self.children: list[SenderProcess] = []

    def manage(self, *args):
        result = manage(*args, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def queue(self, count: int) -> None:
        send_mail_in_project(self.env, count, to="to{n}@example.com")

    def counts(self) -> tuple[int, ...]:
        """Queued and never tried, queued after a failed attempt (its retry waiting, or due already: the backoff's
        random wait may be shorter than the time it takes to count), deferred, success and failure log entries."""
        return tuple(int(n) for n in self.manage("shell", "-v0", "-c", COUNT).split())

    def start(self, command: str, settings: dict) -> SenderProcess:
        child = SenderProcess(
            command,
            self.env,
            self.tmp_path / f"{command}-{len(self.children)}.log",
            settings=settings,
            banner=command != "send_mail",
        )
        self.children.append(child)
        return child

    def lock_held(self) -> bool:
        return os.path.exists(self.lock + ".lock")


@pytest.fixture
def silent_relay():
    with SilentRelay() as relay:
        yield relay


@pytest.fixture
def silent_project(tmp_path, silent_relay):
    with fresh_database(tmp_path, "timeouts") as name:
        project = Project(tmp_path, name, silent_relay.port)
        project.manage("migrate", "-v0")
        try:
            yield project
        finally:
            for child in project.children:
                child.kill()
                print(f"--- {child.command} ---\n{child.log()}")


@pytest.mark.parametrize("setting", ["MAILER_EMAIL_TIMEOUT", "EMAIL_TIMEOUT"])
def test_a_silent_relay_costs_a_pass_one_timeout(silent_project, silent_relay, setting):
    """5 queued messages, a relay that never greets, a 1 s timeout: send_mail ends after ~1 s, not 5 (or never)."""
    silent_project.queue(5)
    started = time.monotonic()
    child = silent_project.start("send_mail", {setting: 1})
    status = child.wait(timeout=30)
    elapsed = time.monotonic() - started
    print(f"send_mail took {elapsed:.2f}s, {silent_relay.connections} connection(s)")
    assert status == 0, child.log()
    # About one timeout plus the start of Django; five timeouts would be 5 s more.
    assert elapsed < 4.5, f"{elapsed:.1f}s\n{child.log()}"
    assert silent_relay.connections == 1, child.log()
    # The message in hand waits for its retry (a timeout is transient), the rest untouched.
    assert silent_project.counts() == (4, 1, 0, 0, 1)
    assert not silent_project.lock_held()
    assert "did not answer" in child.log()


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("command", ["send_mail", "runmailer"])
def test_sigterm_stops_a_sender_blocked_on_a_silent_relay(silent_project, silent_relay, command, connections):
    silent_project.queue(3)
    child = silent_project.start(command, {"MAILER_EMAIL_TIMEOUT": 120, "MAILER_SENDER_CONNECTIONS": connections})
    silent_relay.wait_for_connections(connections)
    # The scenario: the sender waits for a greeting that never comes. Nothing the relay can see marks the
    # moment the child blocks in recv() after its connect(), so this sleep lets it get there.
    time.sleep(0.2)
    stopping = time.monotonic()
    status = child.stop(signal.SIGTERM, timeout=30)
    print(f"{command} stopped {time.monotonic() - stopping:.2f}s after SIGTERM")
    assert time.monotonic() - stopping < smtp.INTERRUPT_GRACE + 3, child.log()
    assert status == 0, child.log()
    assert silent_project.counts() == (3, 0, 0, 0, 0), child.log()  # still queued, not deferred, nothing logged
    assert not silent_project.lock_held()


@pytest.mark.parametrize("command", ["send_mail", "runmailer"])
def test_sigterm_mid_delivery_keeps_what_was_sent(tmp_path, command):
    """The relay takes 2 messages, then never answers a DATA: SIGTERM; the 2 are recorded, the rest stay queued."""
    with ScriptedRelay(stall_after=2) as relay, fresh_database(tmp_path, "stall") as name:
        project = Project(tmp_path, name, relay.port)
        project.manage("migrate", "-v0")
        project.queue(4)
        child = project.start(command, {"MAILER_EMAIL_TIMEOUT": 120})
        try:
            relay.wait_for(2)
            relay.wait_for_stall()  # the third DATA is waiting for the relay's reply
            stopping = time.monotonic()
            status = child.stop(signal.SIGTERM, timeout=30)
            assert time.monotonic() - stopping < smtp.INTERRUPT_GRACE + 3, child.log()
            assert status == 0, child.log()
            assert project.counts() == (2, 0, 0, 2, 0), child.log()
            assert not project.lock_held()
        finally:
            child.kill()
            print(child.log())


@pytest.mark.django_db
def test_the_default_timeout_is_applied_to_smtp_connections(settings):
    with ScriptedRelay() as relay:
        send_through(settings, relay)
        connection = route().open()
        try:
            assert isinstance(connection, SMTPBackend)
            assert connection.timeout == 30
            assert connection.connection.sock.gettimeout() == 30
        finally:
            connection.close()

        settings.MAILER_EMAIL_TIMEOUT = 2.5
        connection = route().open()
        assert connection.timeout == 2.5
        connection.close()

        # The project's own timeout wins.
        send_through(settings, relay, timeout=7)
        connection = route().open()
        assert connection.timeout == 7
        connection.close()


# --- Several relays: one that does not answer does not hold up the others ------------------------------

RELAY_PORTS: dict[str, int] = {}  # backend name -> port, set by the test below


class SilentBackend(SMTPBackend):
    """Django's SMTP backend pointed at the silent relay (no timeout of its own: the default applies)."""

    def __init__(self, **kwargs):
        super().__init__(host="127.0.0.1", port=RELAY_PORTS["silent"], use_tls=False, **kwargs)


class GoodBackend(SMTPBackend):
    def __init__(self, **kwargs):
        super().__init__(host="127.0.0.1", port=RELAY_PORTS["good"], use_tls=False, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_other_relays_keep_sending_while_one_does_not_answer(settings, monkeypatch, silent_relay, smtp_server):
    """Two real mailers (as two MAILERS aliases would be): 3 messages each, interleaved; one relay is silent."""
    from mailer import engine
    from mailer.models import Message, make_message
    from mailer.routing import Route

    RELAY_PORTS.update(silent=silent_relay.port, good=smtp_server.port)
    if mailers_configured():  # Django 6.1: two real MAILERS aliases
        smtp_backend = "django.core.mail.backends.smtp.EmailBackend"
        settings.MAILERS = {
            **settings.MAILERS,
            "good": {"BACKEND": smtp_backend, "OPTIONS": {"host": "127.0.0.1", "port": smtp_server.port}},
            "silent": {"BACKEND": smtp_backend, "OPTIONS": {"host": "127.0.0.1", "port": silent_relay.port}},
        }
        settings.MAILER_DELIVER_USING = "good"
    else:
        monkeypatch.setattr(
            engine,
            "routes",
            lambda: {
                None: Route(path=f"{__name__}.GoodBackend"),
                "silent": Route(path=f"{__name__}.SilentBackend"),
            },
        )
    settings.MAILER_EMAIL_TIMEOUT = 1
    for n in range(6):
        message = make_message(f"m{n}", "body", "from@example.com", [f"to{n}@example.com"])
        message.mailer = "silent" if n % 2 else None
        message.save()

    # In a thread, so that a pass that hangs fails the test; closing the relay (the fixture) then ends it.
    results = []

    def send():
        try:
            results.append(engine.send_all())
        finally:
            connections.close_all()

    sending = threading.Thread(target=send, daemon=True)
    started = time.monotonic()
    sending.start()
    sending.join(10)
    elapsed = time.monotonic() - started
    assert not sending.is_alive(), "send_all() still blocked on the silent relay after 10 s"
    [result] = results

    assert elapsed < 2.5, elapsed  # one timeout, not three
    assert sorted(m.message["Subject"] for m in smtp_server.messages) == ["m0", "m2", "m4"]
    assert (result.sent, result.deferred) == (3, 1)
    assert silent_relay.connections == 1
    assert Message.objects.waiting_for_retry().count() == 1  # the timeout is transient: retried later
    assert not Message.objects.deferred().exists()
    assert Message.objects.due().count() == 2  # the silent relay's other two wait for the next pass


@pytest.mark.skipif(
    dbconfig.vendor() != "postgres",
    reason="runmailer_pg needs PostgreSQL: runs with MAILER_TEST_DB=postgres",
)
def test_sigterm_stops_runmailer_pg_blocked_on_a_silent_relay(silent_project, silent_relay):
    silent_project.queue(2)
    child = silent_project.start("runmailer_pg", {"MAILER_EMAIL_TIMEOUT": 120, "MAILER_USE_FILE_LOCK": False})
    silent_relay.wait_for_connections(1)
    time.sleep(0.2)  # the scenario: blocked waiting for the greeting (see the test above)
    stopping = time.monotonic()
    status = child.stop(signal.SIGTERM, timeout=30)
    assert time.monotonic() - stopping < smtp.INTERRUPT_GRACE + 3, child.log()
    assert status == 0, child.log()
    assert silent_project.counts() == (2, 0, 0, 0, 0), child.log()


# --- The system check of MAILER_EMAIL_TIMEOUT ------------------------------------------------------------


def timeout_check_ids():
    from mailer.checks import check_timeouts

    return sorted(message.id for message in check_timeouts())


@pytest.mark.parametrize("value", ["30", 0, -1, True, [5]])
def test_a_bad_timeout_is_an_error(settings, value):
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.MAILER_EMAIL_TIMEOUT = value
    assert timeout_check_ids() == ["mailer.E006"]


@pytest.mark.parametrize("value", [30, 0.5])
def test_a_good_timeout_passes(settings, value):
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.MAILER_EMAIL_TIMEOUT = value
    assert timeout_check_ids() == []


def test_no_timeout_at_all_is_a_warning(settings):
    """MAILER_EMAIL_TIMEOUT = None and an SMTP backend without a timeout of its own: a silent relay hangs it."""
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.MAILER_EMAIL_TIMEOUT = None
    settings.EMAIL_TIMEOUT = None
    assert timeout_check_ids() == ["mailer.W006"]
    if not mailers_configured():  # with MAILERS, Django reads no EMAIL_* setting: an alias's OPTIONS say it
        settings.EMAIL_TIMEOUT = 10  # the project's own timeout applies
        assert timeout_check_ids() == []


def test_no_timeout_with_a_backend_that_is_not_smtp_is_fine(settings):
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.MAILER_EMAIL_TIMEOUT = None
    assert timeout_check_ids() == []


@pytest.mark.django_db
def test_a_bad_timeout_stops_the_run_and_leaves_the_mail_queued(settings):
    """Not a failure of the message (deferred, for ever, one per run): the configuration is at fault."""
    import mailer
    from mailer.engine import send_all
    from mailer.models import Message, MessageLog

    with ScriptedRelay() as relay:
        send_through(settings, relay)
        settings.MAILER_EMAIL_TIMEOUT = "30"
        mailer.send_mail("stays", "body", "from@example.com", ["to@example.com"])
        with pytest.raises(ImproperlyConfigured, match="MAILER_EMAIL_TIMEOUT"):
            send_all()
    assert Message.objects.non_deferred().count() == 1
    assert not MessageLog.objects.exists()
    assert relay.transactions == []


def test_interrupt_reaches_a_connection_after_starttls(tmp_path):
    """STARTTLS replaces the socket (the plain one is detached): interrupt() must cut the TLS one."""
    from django.core.mail import EmailMessage

    from tests.support.relays import self_signed

    server_context, client_context = self_signed(tmp_path)

    class TLSBackend(SMTPBackend):
        ssl_context = client_context

    with ScriptedRelay(stall_after=0, tls_context=server_context) as relay:
        # Every option given: with MAILERS (Django 6.1) a backend made by hand may read no EMAIL_* setting.
        options = {"username": "", "password": "", "use_ssl": False, "ssl_keyfile": "", "ssl_certfile": ""}
        connection = smtp.prepare(TLSBackend(host=relay.host, port=relay.port, use_tls=True, timeout=60, **options))
        errors = []

        def deliver():
            try:
                connection.send_messages([EmailMessage("s", "b", "from@example.com", ["to@example.com"])])
            except Exception as exc:
                errors.append(exc)

        sending = threading.Thread(target=deliver, daemon=True)
        sending.start()
        relay.wait_for_stall()  # STARTTLS done, DATA waiting for a reply that never comes
        assert sending.is_alive()
        smtp.interrupt()
        sending.join(5)
        assert not sending.is_alive(), "the delivery is still blocked after interrupt()"
        assert errors and isinstance(errors[0], OSError), errors
