"""Forgetting ``manage.py migrate``: a clear error naming the fix, at queue time and in every command.

Each database words the error its own way (SQLite "no such table", PostgreSQL 'relation ... does not
exist', MariaDB/MySQL "Table ... doesn't exist"): run on each with ``--db``.
"""

import pytest

from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.project_db import migrated_project
from tests.support.services import fresh_database

ADVICE = "the mailer tables do not exist: run `manage.py migrate mailer`"
STALE = "run `manage.py migrate mailer`"

QUEUE = """
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
import mailer
from mailer.backend import DbBackend
from mailer.tables import TablesMissing
for name, queue in [
    ("send_mail", lambda: mailer.send_mail("s", "b", "from@example.com", ["to@example.com"])),
    ("DbBackend", lambda: DbBackend().send_messages([EmailMessage("s", "b", "from@example.com", ["to@example.com"])])),
]:
    try:
        queue()
    except ImproperlyConfigured as exc:
        print(name, isinstance(exc, TablesMissing), exc)
    else:
        print(name, "queued")
"""


@pytest.fixture
def empty_db(tmp_path):
    with fresh_database(tmp_path, "unmigrated") as name:
        yield {
            "MAILER_TEST_DB": dbconfig.vendor(),
            "MAILER_TEST_DB_NAME": name,
            "MAILER_TEST_LOCK_PATH": str(tmp_path / "lock"),
        }


def test_queueing_says_to_migrate(empty_db):
    done = manage("shell", "-c", QUEUE, env=empty_db)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip().splitlines()[-2:]
    assert [line.split(" ", 2)[:2] for line in out] == [["send_mail", "True"], ["DbBackend", "True"]], out
    assert all(line.split(" ", 2)[2].startswith(ADVICE) for line in out), out


COMMANDS = [["send_mail"], ["retry_deferred"], ["purge_mail_log", "7"], ["mailer_status"], ["runmailer"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
def test_every_command_says_to_migrate(empty_db, command):
    done = manage(*command, env=empty_db, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"CommandError: {ADVICE}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="runmailer_pg needs PostgreSQL (MAILER_TEST_DB=postgres)")
def test_runmailer_pg_says_to_migrate(empty_db):
    done = manage("runmailer_pg", env=empty_db, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"CommandError: {ADVICE}" in done.stderr
    assert "Traceback" not in done.stderr


def test_tables_of_an_older_version_say_to_migrate(tmp_path):
    queue = "import mailer; mailer.send_mail('s', 'b', 'f@example.com', ['t@example.com'])"
    with migrated_project(tmp_path, "older") as env:
        assert manage("shell", "-c", queue, env=env).returncode == 0
        done = manage("migrate", "mailer", "0012", env=env)
        assert done.returncode == 0, done.stderr
        sent = manage("send_mail", env=env)
        queued = manage("shell", "-c", queue, env=env)
    assert sent.returncode == 1, (sent.stdout, sent.stderr)
    assert "CommandError: the mailer tables are not up to date" in sent.stderr
    assert STALE in sent.stderr and "Traceback" not in sent.stderr
    assert "TablesMissing: the mailer tables are not up to date (" in queued.stderr
    assert "not_before" in queued.stderr.splitlines()[-1]
