"""Multi-database projects: every query and transaction of ours goes to the database the router picks.

A real project in child processes with two SQLite files and ``tests.routers.MailRouter``, which puts
django-mailer's tables in "mail" only: a single query of ours on "default" would fail there with
"no such table". Queueing (Django's mail API, ``mailer.send_mail``, the don't-send list), sending,
retrying and purging all run on it.
"""

import json
import sqlite3

import pytest

from tests.support.procs import manage

QUEUE = """
from django.core import mail
from django.utils import timezone
import mailer
from mailer.models import DontSendEntry
DontSendEntry.objects.create(to_address="blocked@example.org", when_added=timezone.now())
mail.send_mail("via Django", "B", "f@example.org", ["ann@example.org", "blocked@example.org"])
mailer.send_html_mail("via mailer", "B", "<p>B</p>", "f@example.org", ["bob@example.org"])
mailer.send_mail("only blocked", "B", "f@example.org", ["blocked@example.org"])
"""


@pytest.fixture
def project(tmp_path, smtp_server):
    default, mail = tmp_path / "default.sqlite3", tmp_path / "mail.sqlite3"
    settings = {
        "DATABASES": {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(default)},
            "mail": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(mail)},
        },
        "DATABASE_ROUTERS": ["tests.routers.MailRouter"],
    }
    env = {
        "MAILER_TEST_DB": "sqlite",
        "MAILER_TEST_SMTP_PORT": smtp_server.port,
        "MAILER_TEST_LOCK_PATH": str(tmp_path / "send_mail"),
        "MAILER_TEST_SETTINGS": json.dumps(settings),
    }
    for database in ("default", "mail"):
        done = manage("migrate", "--no-input", "--database", database, env=env)
        assert done.returncode == 0, done.stderr
    return env, default, mail


def tables(path):
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def run(env, *args):
    done = manage(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_queue_send_retry_and_purge_use_the_routed_database(project, smtp_server):
    env, default, mail = project
    assert not any(name.startswith("mailer_") for name in tables(default))
    assert {"mailer_message", "mailer_messagelog", "mailer_dontsendentry"} <= tables(mail)

    run(env, "shell", "-c", QUEUE)
    assert rows(mail, "SELECT count(*) FROM mailer_message") == [(2,)]
    assert rows(mail, "SELECT result FROM mailer_messagelog") == [("2",)]  # "only blocked": don't send

    done = run(env, "send_mail")
    assert "sent 2, deferred 0, skipped 0, failed 0" in done.stderr
    assert sorted(m.message["Subject"] for m in smtp_server.messages) == ["via Django", "via mailer"]
    assert [m.rcpt_tos for m in smtp_server.messages if m.message["Subject"] == "via Django"] == [["ann@example.org"]]
    assert rows(mail, "SELECT count(*) FROM mailer_message") == [(0,)]
    assert rows(mail, "SELECT result, count(*) FROM mailer_messagelog GROUP BY result") == [("1", 2), ("2", 1)]

    run(env, "retry_deferred")
    run(env, "purge_mail_log", "0", "-r", "all")
    assert rows(mail, "SELECT count(*) FROM mailer_messagelog") == [(0,)]
