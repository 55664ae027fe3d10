"""Fixtures shared by the whole test suite."""

import random

import hypothesis
import pytest

from mailer import failures as failure_rules
from tests.support import backends
from tests.support.procs import manage
from tests.support.relays import send_through
from tests.support.smtp_sink import running_sink, slow_down

# Database round trips make run times uneven; a deadline would only make the suite flaky.
hypothesis.settings.register_profile("mailer", deadline=None, database=None)
hypothesis.settings.load_profile("mailer")


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


@pytest.fixture(autouse=True)
def _steady_backoff(monkeypatch):
    """The backoff draws its waits from a generator seeded the same for every test.

    Full jitter may draw a wait of a few milliseconds; a test that looks at a message "waiting for its retry"
    just after the failure would then fail once in a few hundred runs. This seed's first eight draws are all
    at least a tenth of the cap (six seconds with the default MAILER_RETRY_DELAY).
    """
    monkeypatch.setattr(failure_rules, "random", random.Random(2026))


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


@pytest.fixture
def slow_smtp_server(smtp_server):
    """The SMTP sink taking a few milliseconds per message, so that senders overlap."""
    return slow_down(smtp_server, 0.004)


@pytest.fixture
def smtp_settings(settings, smtp_server):
    """Make the queue's real sender Django's SMTP backend, pointed at ``smtp_server`` (alias "smtp" on 6.1+)."""
    send_through(settings, smtp_server, alias="smtp")
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


@pytest.fixture
def legacy_policy(settings):
    """django-mailer 2.3.2's failure policy: no automatic retry, every failure defers the message (priority 4).

    For tests of the deferring mechanism itself (``MAILER_EMAIL_MAX_DEFERRED``, ``retry_deferred``, the admin's
    requeue), which projects keep using with these two settings.
    """
    settings.MAILER_RETRY_MAX_ATTEMPTS = 1
    settings.MAILER_DEFER_PERMANENT_FAILURES = True
    return settings


MiB16 = 16 * 1024 * 1024


@pytest.fixture
def packet_limit():
    """The server's ``max_allowed_packet``, lowered to 16 MiB (MariaDB's default) for the test if it is larger."""
    from django.db import connection

    if connection.vendor != "mysql":
        pytest.skip("max_allowed_packet is a MySQL/MariaDB setting")
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@GLOBAL.max_allowed_packet")
        [original] = cursor.fetchone()
        if original > MiB16:
            cursor.execute("SET GLOBAL max_allowed_packet = %s", [MiB16])
    connection.close()  # the session value is read when connecting
    yield min(original, MiB16)
    if original > MiB16:
        with connection.cursor() as cursor:
            cursor.execute("SET GLOBAL max_allowed_packet = %s", [original])
    connection.close()


@pytest.fixture
def relay(settings):
    """A scripted loopback relay (tests.support.relays) that the senders deliver to; accepts everything."""
    from tests.support.relays import ScriptedRelay, send_through

    with ScriptedRelay() as relay:
        send_through(settings, relay)
        yield relay


@pytest.fixture
def tasks(settings):
    """:mod:`mailer.tasks`, on Django's immediate task backend (a test may switch ``TASKS`` to another)."""
    import importlib

    from tests.support.services import unavailable
    from tests.support.task_backends import IMMEDIATE, TASKS_MODULE

    try:
        importlib.import_module(TASKS_MODULE)
    except ImportError as exc:  # django-tasks is in the test extra: missing, it fails under CI's settings
        unavailable(f"{TASKS_MODULE} cannot be imported ({exc}); pip install -e '.[test]'")
    settings.TASKS = {"default": {"BACKEND": IMMEDIATE}}
    from mailer import tasks

    return tasks
