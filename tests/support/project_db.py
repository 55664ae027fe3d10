"""A migrated database of the vendor under test for ``tests.project``, and shell code run in it.

For tests that run management commands in child processes (:mod:`tests.support.procs`) against a
database of their own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from tests.support import dbconfig, services
from tests.support.procs import manage
from tests.support.services import fresh_database


@contextmanager
def migrated_project(tmp_path: Path, prefix: str, **env: str) -> Iterator[dict]:
    """Yield the env for ``manage`` of a fresh, migrated database of the vendor under test."""
    with fresh_database(tmp_path, prefix) as name:
        full = {
            "MAILER_TEST_DB": dbconfig.vendor(),
            "MAILER_TEST_DB_NAME": name,
            "MAILER_TEST_LOCK_PATH": str(tmp_path / f"{prefix}-lock"),
            **env,
        }
        done = manage("migrate", "--no-input", env=full)
        assert done.returncode == 0, done.stderr
        yield full


@contextmanager
def relay_project(tmp_path: Path, relay: Any, prefix: str) -> Iterator[dict]:
    """A migrated database whose senders deliver to ``relay`` (a test relay with a ``port``), without the
    file lock: its senders run at once and compete for the queue."""
    env = {
        "MAILER_TEST_SMTP_PORT": str(relay.port),
        "MAILER_TEST_USE_FILE_LOCK": "0",
        "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.1",
    }
    with migrated_project(tmp_path, prefix, **env) as full:
        yield full


def run_in_project(env: dict, code: str, timeout: float = 300) -> str:
    """Run ``code`` with ``manage.py shell -c``; its standard output. Fails the test if it fails."""
    done = manage("shell", "-c", code, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


SEND_MAIL = """
import mailer
for n in range({count}):
    mailer.send_mail(f"m{{n}}", "body", "from@example.com", [{to}])
"""


def send_mail_in_project(env: dict, count: int, to: str = "to@example.com") -> None:
    """Queue ``count`` messages "m0", "m1"... in a child process, through ``mailer.send_mail()``.

    ``to`` may hold ``{n}`` (``"to{n}@example.com"``): each message its own recipient.
    """
    run_in_project(env, SEND_MAIL.format(count=count, to=f"f{to!r}"))


TABLE_COUNTS = """
import json
from mailer.models import Message, MessageLog
print(json.dumps({
    "queued": Message.objects.count(),
    "deferred": Message.objects.filter(priority=4).count(),
    "logs": {r: MessageLog.objects.filter(result=r).count() for r in "123"},
}))
"""


def table_counts(env: dict) -> dict:
    """Queued and deferred messages, log rows by result code ("1" success, "2" don't send, "3" failure)."""
    return json.loads(run_in_project(env, TABLE_COUNTS).strip().splitlines()[-1])


def select(env: dict, sql: str) -> list[tuple]:
    """Rows of ``sql`` read straight from the database of ``env`` (any vendor), in this process: milliseconds,
    for a test that must look while a child is in the middle of something, which a child reading it (a second
    or more on a loaded machine) could miss."""
    name, vendor = env["MAILER_TEST_DB_NAME"], env["MAILER_TEST_DB"]
    if vendor == "sqlite":
        connection = sqlite3.connect(name, timeout=10)
    elif vendor == "postgres":
        connection = services.pg_connect(name)
    else:
        connection = services.mysql_connect()
    with closing(connection), closing(connection.cursor()) as cursor:
        if vendor == "mysql":
            cursor.execute(f"USE `{name}`")
        cursor.execute(sql)
        return list(cursor.fetchall())
