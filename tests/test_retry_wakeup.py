"""The long-running senders wake up when a message waiting for a retry falls due, not at their next poll.

A row waiting for its next attempt (``not_before`` a few seconds ahead, one failed attempt) is inserted
as a child ``runmailer_pg`` or ``runmailer`` runs with ``MAILER_EMPTY_QUEUE_SLEEP`` at 300 s: a delivery
within a second or two of ``not_before`` can only come from the wake-up, and one before it would be early.
"""

from __future__ import annotations

import time
from contextlib import closing

import pytest

from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.queueing import email_data
from tests.support.senders import SenderProcess
from tests.support.services import fresh_postgres_database, pg_connect

postgres_run = pytest.mark.skipif(
    dbconfig.vendor() != "postgres", reason="children on a database of their own: runs with MAILER_TEST_DB=postgres"
)

DUE_IN = 3.0  # seconds from the insert to the row's not_before
INSERT_WAITING = (
    "INSERT INTO mailer_message (message_data, when_added, priority, retry_count, not_before, attempts, last_error)"
    " VALUES (%s, now(), 2, 0, now() + make_interval(secs => %s), 1, '451 4.3.0 Try again later')"
)


@pytest.fixture
def project(smtp_server, tmp_path):
    with fresh_postgres_database() as name:
        env = {
            "MAILER_TEST_DB": "postgres",
            "MAILER_TEST_DB_NAME": name,
            "MAILER_TEST_SMTP_PORT": smtp_server.port,
            "MAILER_TEST_USE_FILE_LOCK": "0",
            "MAILER_TEST_EMPTY_QUEUE_SLEEP": "300",
        }
        result = manage("migrate", "-v0", env=env)
        assert result.returncode == 0, result.stderr
        children: list[SenderProcess] = []
        yield env, (lambda: pg_connect(name)), children
        for child in children:
            child.kill()
            print(f"--- log of {child.command} (exit status {child.proc.returncode}) ---\n{child.log()}")


def insert_waiting(connect, due_in: float) -> float:
    """Insert a row waiting for its second attempt, due in ``due_in`` s (server clock); when it is due, monotonic."""
    with closing(connect()) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(INSERT_WAITING, [email_data("waiting", 1), due_in])
        cursor.execute("SELECT extract(epoch FROM not_before - clock_timestamp()) FROM mailer_message")
        return time.monotonic() + float(cursor.fetchone()[0])


@postgres_run
@pytest.mark.parametrize("command", ["runmailer_pg", "runmailer"])
def test_a_waiting_message_is_sent_when_due_not_at_the_next_poll(project, smtp_server, tmp_path, command):
    """runmailer_pg: inserted while it listens (the NOTIFY's pass finds nothing due). runmailer: queued before it
    starts, so that its first look finds nothing due; either must then wait for the due time, not 300 s."""
    env, connect, children = project
    if command == "runmailer":
        due_at = insert_waiting(connect, DUE_IN)
    child = SenderProcess(command, env, tmp_path / f"{command}.log")
    children.append(child)
    if command == "runmailer_pg":
        child.wait_for_log("listening for new mail")
        due_at = insert_waiting(connect, DUE_IN)
    smtp_server.wait_for(1, timeout=DUE_IN + 10)
    arrived = time.monotonic()
    assert arrived >= due_at - 0.05, f"sent {due_at - arrived:.2f}s before its next attempt time"
    assert arrived - due_at < 2.0, f"sent {arrived - due_at:.2f}s after its next attempt time"
    assert child.stop() == 0, child.log()
