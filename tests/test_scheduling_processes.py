"""Scheduled mail with real processes and real clocks: sent on time by the long-running senders, never early.

Messages are queued through ``mailer.send_mail(send_at=..., expires_at=...)`` in a child process, as a web
process would. ``runmailer_pg`` and ``runmailer`` run with ``MAILER_EMPTY_QUEUE_SLEEP`` at 300 s: a delivery
within a second of ``send_at`` can only come from waking up for it. ``send_mail`` run again and again, as
cron would, sends nothing before ``send_at`` and the message once after it. A message whose ``expires_at``
has passed is logged as expired and never reaches the relay.
"""

from __future__ import annotations

import datetime
import time
from contextlib import closing

import pytest

from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.senders import SenderProcess
from tests.support.services import fresh_postgres_database, pg_connect
from tests.support.sqlite_project import child_env, query
from tests.support.waiting import wait_until

postgres_run = pytest.mark.skipif(
    dbconfig.vendor() != "postgres", reason="children on a database of their own: runs with MAILER_TEST_DB=postgres"
)
sqlite_run = pytest.mark.skipif(
    dbconfig.vendor() != "sqlite",
    reason="children on a SQLite file of their own: runs once, with MAILER_TEST_DB=sqlite",
)

QUEUE = (
    "import datetime, mailer\n"
    "from django.utils import timezone\n"
    "now = timezone.now()\n"
    "mailer.send_mail('scheduled', 'b', 'from@example.com', ['to@example.com'],"
    " send_at=now + datetime.timedelta(seconds={due_in}), expires_at=now + datetime.timedelta(hours=1))\n"
    "if {with_expired}:\n"
    "    mailer.send_mail('expired', 'b', 'from@example.com', ['late@example.com'],"
    " expires_at=now - datetime.timedelta(seconds=1))\n"
)


def queue_scheduled(env: dict, due_in: float, with_expired: bool = True) -> None:
    """In a child: one message due in ``due_in`` s; and, with ``with_expired``, one that has already expired."""
    done = manage("shell", "-c", QUEUE.format(due_in=due_in, with_expired=with_expired), env=env)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def project(smtp_server):
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


def pg_rows(connect, sql: str) -> list[tuple]:
    with closing(connect()) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def due_at(connect) -> float:
    """``time.monotonic()`` when the scheduled message falls due, from its ``not_before`` and the server's clock."""
    rows = pg_rows(connect, "SELECT extract(epoch FROM not_before - clock_timestamp()) FROM mailer_message")
    assert len(rows) == 1, rows
    return time.monotonic() + float(rows[0][0])


@postgres_run
@pytest.mark.parametrize("command", ["runmailer_pg", "runmailer"])
def test_a_scheduled_message_is_sent_within_a_second_of_send_at_and_an_expired_one_never(
    project, smtp_server, tmp_path, command
):
    """runmailer_pg: queued while it listens (the NOTIFY's pass expires one message and finds the other not due).
    runmailer: queued before it starts, so that its first pass finds nothing due after expiring the other."""
    env, connect, children = project
    if command == "runmailer":
        queue_scheduled(env, due_in=6)
    child = SenderProcess(command, env, tmp_path / f"{command}.log")
    children.append(child)
    if command == "runmailer_pg":
        child.wait_for_log("listening for new mail")
        queue_scheduled(env, due_in=3)
    wait_until(
        lambda: pg_rows(connect, "SELECT count(*) FROM mailer_messagelog WHERE log_message LIKE 'expired:%%'")[0][0],
        timeout=15,
        message=lambda: f"the expired message was not logged as such:\n{child.log()}",
    )
    due = due_at(connect)
    smtp_server.wait_for(1, timeout=max(0.0, due - time.monotonic()) + 10)
    arrived = time.monotonic()
    assert arrived >= due - 0.05, f"sent {due - arrived:.2f}s before send_at"
    assert arrived - due < 1.0, f"sent {arrived - due:.2f}s after send_at"
    assert child.stop() == 0, child.log()
    assert [m.message["Subject"] for m in smtp_server.messages] == ["scheduled"]
    assert pg_rows(connect, "SELECT count(*) FROM mailer_message") == [(0,)]
    assert "expired: at" in child.log()


@sqlite_run
def test_send_mail_from_cron_run_again_and_again_sends_nothing_early_and_the_message_once(sqlite_project, smtp_server):
    # Due after at least three runs' time (4 s on a quiet machine), so that runs come before it however slow
    # a loaded machine makes each child process: timed on a run over the empty queue.
    started = time.monotonic()
    assert manage("send_mail", env=child_env(sqlite_project)).returncode == 0
    due_in = max(4.0, 3 * (time.monotonic() - started))
    queue_scheduled(child_env(sqlite_project), due_in=due_in, with_expired=False)
    (stored,) = query(sqlite_project, "SELECT not_before FROM mailer_message")
    send_at = datetime.datetime.fromisoformat(stored[0]).replace(tzinfo=datetime.UTC).timestamp()
    runs = []  # (wall clock time at the end of the run, messages at the relay then)
    deadline = time.monotonic() + 30
    while not smtp_server.messages and time.monotonic() < deadline:
        done = manage("send_mail", env=child_env(sqlite_project))
        assert done.returncode == 0, done.stderr
        runs.append((time.time(), len(smtp_server.messages)))
    assert smtp_server.messages, f"not sent by {len(runs)} runs"
    early = [(end, count) for end, count in runs if end < send_at]
    assert early, "no run before send_at: the test proves nothing (a slow machine?)"
    assert all(count == 0 for _end, count in early), runs
    done = manage("send_mail", env=child_env(sqlite_project))  # one more run: nothing is left to send
    assert done.returncode == 0, done.stderr
    assert len(smtp_server.messages) == 1
    assert query(sqlite_project, "SELECT count(*) FROM mailer_message") == [(0,)]
