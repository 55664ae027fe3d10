"""runmailer_pg against a real PostgreSQL server, in a child process."""

import signal
import time

import pytest
from django.core.mail import EmailMessage

from mailer import serialization
from tests.procs import manage, popen_manage
from tests.services import _pg_connect, fresh_postgres_database


def queue_raw(dbname: str, subject: str) -> None:
    """Insert one message with its own connection and commit, as a web process would."""
    data = serialization.dumps(EmailMessage(subject, "body", "from@example.com", ["to@example.com"]))
    conn = _pg_connect(dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO mailer_message (message_data, when_added, priority, retry_count) VALUES (%s, now(), 2, 0)",
                [data],
            )
    finally:
        conn.close()


@pytest.fixture
def pg_project(smtp_server):
    with fresh_postgres_database() as name:
        env = {
            "MAILER_TEST_DB": "postgres",
            "MAILER_TEST_DB_NAME": name,
            "MAILER_TEST_SMTP_PORT": smtp_server.port,
            "MAILER_TEST_USE_FILE_LOCK": "0",
            "MAILER_TEST_EMPTY_QUEUE_SLEEP": "30",
        }
        migrated = manage("migrate", "-v0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        yield name, env


def start(env):
    proc = popen_manage("runmailer_pg", env=env)
    assert "Starting django-mailer" in proc.stdout.readline() + proc.stdout.readline()
    return proc


def stop(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    except Exception:
        proc.kill()
        raise
    return proc.returncode, err


def test_sends_within_moments_of_commit(pg_project, smtp_server):
    name, env = pg_project
    proc = start(env)
    try:
        time.sleep(0.5)  # the listener is up once the first (empty) pass has run
        latencies = []
        for n in range(5):
            began = time.monotonic()
            queue_raw(name, f"fast {n}")
            smtp_server.wait_for(n + 1, timeout=10)
            latencies.append(time.monotonic() - began)
    finally:
        status, err = stop(proc)
    assert status == 0, err
    # The poll interval is 30 s: anything this fast came through NOTIFY.
    assert max(latencies) < 5, latencies
    assert sorted(m.message["Subject"] for m in smtp_server.messages) == [f"fast {n}" for n in range(5)]


def test_sends_the_backlog_at_start_and_stops_on_sigint(pg_project, smtp_server):
    name, env = pg_project
    for n in range(3):
        queue_raw(name, f"backlog {n}")
    proc = start(env)
    try:
        smtp_server.wait_for(3, timeout=15)
    finally:
        status, err = stop(proc, signal.SIGINT)
    assert status == 0, err


def test_refuses_other_databases(tmp_path):
    result = manage("runmailer_pg", env={"MAILER_TEST_DB": "sqlite", "MAILER_TEST_DB_NAME": tmp_path / "db.sqlite3"})
    assert result.returncode != 0
    assert "needs PostgreSQL" in result.stderr
