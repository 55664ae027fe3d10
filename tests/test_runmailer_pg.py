"""runmailer_pg against a real PostgreSQL server, in child processes, delivering to a real SMTP sink.

Mail is queued the way a web process queues it: rows inserted and committed on a connection of the
test's own. Each child logs to a file under ``tmp_path``, which the tests read to see what it did
(and print when something goes wrong). ``MAILER_EMPTY_QUEUE_SLEEP`` is 30 s throughout: a message
delivered within seconds came through NOTIFY (or a reconnection's catch-up), not through polling.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailer import serialization
from mailer.models import PRIORITY_DEFERRED, RESULT_FAILURE
from tests.support import dbconfig
from tests.support.pgcluster import private_cluster
from tests.support.procs import REPO_ROOT, manage
from tests.support.queueing import email_data, insert_rows
from tests.support.senders import SenderProcess
from tests.support.services import fresh_postgres_database, pg_connect
from tests.support.waiting import wait_until

LISTENING = "listening for new mail"
RECONNECTED = "listening for new mail again"

# The suite runs once per database (runtests.py): these tests run in the PostgreSQL run, and there they
# need the server (skipped without it, failed with MAILER_TEST_REQUIRE_SERVICES=1).
postgres_run = pytest.mark.skipif(
    dbconfig.vendor() != "postgres", reason="runmailer_pg needs PostgreSQL: runs with MAILER_TEST_DB=postgres"
)


def seq_of(received) -> int:
    return int(received.message["X-Seq"])


@dataclass
class Project:
    """A migrated database, the child environment that points at it, and the children started on it."""

    env: dict
    connect: object  # () -> an autocommit DB-API connection to the project's database
    tmp_path: Path
    python: str = sys.executable
    cluster: object = None  # a tests.support.pgcluster.Cluster, for a database on a private server
    children: list[SenderProcess] = field(default_factory=list)

    def manage(self, *args) -> subprocess.CompletedProcess:
        return manage(*args, env=self.env, python=self.python)

    def driver(self) -> str:
        """The driver Django uses in the children, and its version: "psycopg2 2.9.10", "psycopg 3.2.3"..."""
        code = "from django.db import connection as c; print(c.Database.__name__, c.Database.__version__.split()[0])"
        result = self.manage("shell", "-v0", "-c", code)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def migrate(self) -> None:
        result = self.manage("migrate", "-v0")
        assert result.returncode == 0, result.stderr

    def start(self, **settings) -> SenderProcess:
        log_path = self.tmp_path / f"runmailer_pg-{len(self.children)}.log"
        child = SenderProcess("runmailer_pg", self.env, log_path, settings=settings, python=self.python)
        self.children.append(child)
        return child

    def queue(self, *emails: str) -> float:
        """Insert ``emails`` (serialized) in one transaction; the ``time.monotonic()`` just before COMMIT."""
        return insert_rows(self.connect, *emails)

    def query(self, sql: str) -> list[tuple]:
        with closing(self.connect()) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(sql)
            return cursor.fetchall()

    def wait_until_sent(self, timeout: float = 10) -> None:
        """Wait until nothing but deferred mail is queued: what was delivered is committed as sent.

        The SMTP server has a message before the sender commits: without this, a test could look at the
        queue, or restart the server, in between.
        """
        wait_until(
            lambda: self.query(f"SELECT count(*) FROM mailer_message WHERE priority <> {PRIORITY_DEFERRED}") == [(0,)],
            timeout,
            interval=0.02,
            message="messages still queued",
        )

    def kill_children(self) -> None:
        """Kill what still runs; print every child's log (pytest shows it when the test failed)."""
        for n, child in enumerate(self.children):
            child.kill()
            print(f"--- log of runmailer_pg #{n} (exit status {child.proc.returncode}) ---\n{child.log()}")


def smtp_env(smtp_server) -> dict:
    return {
        "MAILER_TEST_SMTP_PORT": smtp_server.port,
        "MAILER_TEST_USE_FILE_LOCK": "0",
        "MAILER_TEST_EMPTY_QUEUE_SLEEP": "30",
    }


@pytest.fixture(scope="session")
def driver_pythons():
    """Interpreters by driver: this one has psycopg 3 (>= 3.2); the others are cached venvs, built on first use."""
    from tests.support.pg_driver_venv import driver_python

    pythons = {"psycopg3": sys.executable}

    def python(driver: str) -> str:
        if driver not in pythons:
            pythons[driver] = str(driver_python(driver))
        return pythons[driver]

    return python


@pytest.fixture
def pg_project(smtp_server, tmp_path):
    """A fresh database on the shared server; children run with this interpreter (psycopg 3)."""
    with fresh_postgres_database() as name:
        env = {"MAILER_TEST_DB": "postgres", "MAILER_TEST_DB_NAME": name, **smtp_env(smtp_server)}
        project = Project(env=env, connect=lambda: pg_connect(name), tmp_path=tmp_path)
        try:
            project.migrate()
            yield project
        finally:
            project.kill_children()


# What Project.driver() says for each parameter.
DRIVER_NAMES = {"psycopg3": "psycopg 3.", "psycopg2": "psycopg2 ", "psycopg3.1": "psycopg 3.1."}


@pytest.fixture(params=list(DRIVER_NAMES))
def private_project(request, driver_pythons, smtp_server, tmp_path):
    """A database on a private cluster the test may restart; children run with each driver in turn."""
    python = driver_pythons(request.param)
    with private_cluster() as cluster:
        env = {**cluster.env(), **smtp_env(smtp_server)}
        if python != sys.executable:
            env["PYTHONPATH"] = str(REPO_ROOT)  # nothing of ours from this interpreter's environment
        project = Project(env=env, connect=cluster.connect, tmp_path=tmp_path, python=python, cluster=cluster)
        try:
            project.migrate()
            assert project.driver().startswith(DRIVER_NAMES[request.param]), project.driver()
            yield project
        finally:
            project.kill_children()


@postgres_run
def test_latency_from_commit_to_smtp(pg_project, smtp_server, record_property):
    """50 messages committed one at a time: each is delivered long before the 30 s poll would send it."""
    child = pg_project.start()
    child.wait_for_log(LISTENING)
    latencies = []
    for n in range(50):
        committing = pg_project.queue(email_data(f"fast {n}", n))
        smtp_server.wait_for(n + 1, timeout=10)
        latencies.append(time.monotonic() - committing)
    assert child.stop() == 0, child.log()
    assert sorted(map(seq_of, smtp_server.messages)) == list(range(50))
    ms = sorted(1000 * seconds for seconds in latencies)
    median, p95 = statistics.median(ms), ms[int(0.95 * len(ms)) - 1]
    record_property("latency_median_ms", round(median, 1))
    record_property("latency_p95_ms", round(p95, 1))
    record_property("latency_max_ms", round(ms[-1], 1))
    print(f"\nrunmailer_pg commit-to-SMTP latency over 50 messages: median {median:.1f} ms, p95 {p95:.1f} ms, "
          f"max {ms[-1]:.1f} ms")  # fmt: skip
    # Machines are noisy: only a bound no poll-based sender (30 s) could meet.
    assert ms[-1] < 5000, ms


@postgres_run
def test_sends_the_backlog_at_start_and_stops_on_sigint(pg_project, smtp_server):
    pg_project.queue(*(email_data(f"backlog {n}", n) for n in range(3)))
    child = pg_project.start()
    smtp_server.wait_for(3, timeout=15)
    assert child.stop(signal.SIGINT) == 0, child.log()


@postgres_run
def test_survives_a_postgresql_restart(private_project, smtp_server):
    """The server goes away for 2 s: both connections (listening, sending) come back, and so does NOTIFY."""
    project = private_project
    child = project.start()
    child.wait_for_log(LISTENING)
    project.queue(email_data("before the restart", 0))
    smtp_server.wait_for(1, timeout=10)
    project.wait_until_sent()  # else the restart may cut the commit that follows delivery: it would be sent again

    project.cluster.restart(down_for=2)
    # Committed as soon as the server accepts connections: runmailer_pg may not be listening again yet.
    project.queue(email_data("after the restart", 1))
    smtp_server.wait_for(2, timeout=15)
    child.wait_for_log(RECONNECTED)
    assert child.alive(), child.log()

    # The new listening connection gets notifications: no 30 s poll needed.
    committing = project.queue(email_data("once listening again", 2))
    smtp_server.wait_for(3, timeout=5)
    assert time.monotonic() - committing < 5

    assert child.stop() == 0, child.log()
    assert sorted(map(seq_of, smtp_server.messages)) == [0, 1, 2], child.log()
    assert "Traceback" not in child.log(), child.log()


@postgres_run
def test_psycopg2_only(driver_pythons, pg_project, smtp_server):
    """Where Django has psycopg2 and not psycopg 3: notifications arrive, SIGTERM stops it cleanly."""
    pg_project.python = driver_pythons("psycopg2")
    pg_project.env["PYTHONPATH"] = str(REPO_ROOT)
    assert pg_project.driver().startswith("psycopg2 "), pg_project.driver()
    child = pg_project.start()
    child.wait_for_log(LISTENING)
    for n in range(3):
        committing = pg_project.queue(email_data(f"psycopg2 {n}", n))
        smtp_server.wait_for(n + 1, timeout=5)
        assert time.monotonic() - committing < 5
    assert child.stop() == 0, child.log()
    assert sorted(map(seq_of, smtp_server.messages)) == [0, 1, 2]


@postgres_run
def test_two_listeners_share_the_work(pg_project, smtp_server):
    """Two runmailer_pg processes on one database (no file lock): 200 messages, each delivered once."""
    # Small claims, so that both processes take turns within each transaction's worth of mail.
    children = [pg_project.start(MAILER_USE_FILE_LOCK=False, MAILER_COMMIT_BATCH_SIZE=10) for _ in range(2)]
    for child in children:
        child.wait_for_log(LISTENING)
    for first in range(0, 200, 50):
        pg_project.queue(*(email_data(f"shared {n}", n) for n in range(first, first + 50)))
    smtp_server.wait_for(200, timeout=20)
    assert all(child.alive() for child in children), [child.log() for child in children]
    # Stopped, neither can send again: what the sink holds now is all there will be, duplicates included.
    assert [child.stop() for child in children] == [0, 0], [child.log() for child in children]
    counts = Counter(map(seq_of, smtp_server.received()))
    assert sorted(counts) == list(range(200))
    assert [seq for seq, count in counts.items() if count != 1] == []
    assert pg_project.query("SELECT count(*) FROM mailer_message") == [(0,)]
    split = [child.log().count("sending message '") for child in children]
    print(f"\nmessages sent by each runmailer_pg: {split}")


@postgres_run
def test_poison_message_is_set_aside_and_the_rest_is_sent(pg_project, smtp_server):
    """A message whose sending raises (ValueError, re-raised by the default error handler) is deferred with
    its traceback in the log; the messages after it, in the same pass, are sent at once; the process runs on."""
    child = pg_project.start(MAILER_EMAIL_BACKEND="tests.support.pg_backends.PickyBackend")
    child.wait_for_log(LISTENING)
    # One transaction: the poison message comes first in the same pass as the good ones.
    pg_project.queue(email_data("poison", 0), *(email_data(f"good {n}", n) for n in range(1, 6)))
    smtp_server.wait_for(5, timeout=10)
    pg_project.wait_until_sent()
    assert sorted(map(seq_of, smtp_server.messages)) == [1, 2, 3, 4, 5]
    assert child.alive(), child.log()

    queued = pg_project.query("SELECT priority, message_data FROM mailer_message")
    assert [(priority, serialization.loads(data).subject) for priority, data in queued] == [
        (PRIORITY_DEFERRED, "poison")
    ]
    failures = pg_project.query(f"SELECT log_message FROM mailer_messagelog WHERE result = '{RESULT_FAILURE}'")
    assert len(failures) == 1, failures
    assert "Traceback" in failures[0][0] and "ValueError: this message is poison" in failures[0][0], failures

    # Still listening, and the next message is not held up by the poison one.
    pg_project.queue(email_data("good later", 6))
    smtp_server.wait_for(6, timeout=5)
    assert child.stop() == 0, child.log()
    assert "this message is poison" in child.log()


@postgres_run
@pytest.mark.parametrize(
    ("backend", "subject", "logged"),
    [
        ("tests.support.pg_backends.PickyBackend", "fatal", "Fatal: the backend gave up for good"),
        ("tests.support.pg_backends.MisconfiguredBackend", "anything", "ImproperlyConfigured: no relay configured"),
    ],
    ids=["base-exception", "improperly-configured"],
)
def test_sending_thread_death_ends_the_process(pg_project, backend, subject, logged):
    """Whatever ends the sending thread ends the process, with status 1 and the reason in the log."""
    child = pg_project.start(MAILER_EMAIL_BACKEND=backend)
    pg_project.queue(email_data(subject, 0))
    status = child.wait(timeout=15)  # fails the test if it keeps running after its sending thread died
    assert status == 1, child.log()  # sys.exit(1), not a signal
    log = child.log()
    assert "sending thread died" in log, log
    assert logged in log, log


def test_refuses_other_databases(tmp_path):
    result = manage("runmailer_pg", env={"MAILER_TEST_DB": "sqlite", "MAILER_TEST_DB_NAME": tmp_path / "db.sqlite3"})
    assert result.returncode != 0
    assert "needs PostgreSQL" in result.stderr
