"""A real Django 6.1 project configured only with ``MAILERS`` (``tests/project/mailers_settings.py``).

Django's own ``send_mail`` and ``EmailMessage.send(using=...)`` queue, ``manage.py send_mail`` drains each
queue through its own relay (aiosmtpd on loopback), and ``check --deploy`` has nothing to say, all in
child processes, where Django's test runner does not replace the mailers with locmem. No deprecation
warning may come from our code.
"""

import sqlite3

import django
import pytest

from tests.support.procs import manage

pytestmark = pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is new in Django 6.1")

QUEUE = """
from django.core.mail import EmailMessage, send_mail
send_mail("Receipt", "Thanks", "shop@example.org", ["ann@example.org"], html_message="<p>Thanks</p>")
EmailMessage("Newsletter", "News", "news@example.org", ["bob@example.org"]).send(using="bulk")
"""


@pytest.fixture
def project(tmp_path, smtp_server, second_smtp_server):
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.project.mailers_settings",
        "MAILER_TEST_DB": "sqlite",
        "MAILER_TEST_DB_NAME": str(tmp_path / "project.sqlite3"),
        "MAILER_TEST_SMTP_PORT": smtp_server.port,
        "MAILER_TEST_BULK_SMTP_PORT": second_smtp_server.port,
        "MAILER_TEST_LOCK_PATH": str(tmp_path / "send_mail"),
        # Show every deprecation warning, so that the test can see whether one comes from our code.
        "PYTHONWARNINGS": "always::DeprecationWarning,always::PendingDeprecationWarning",
    }
    done = manage("migrate", "--no-input", env=env)
    assert done.returncode == 0, done.stderr
    return env


def run(project, *args):
    done = manage(*args, env=project)
    assert done.returncode == 0, done.stdout + done.stderr
    ours = [line for line in done.stderr.splitlines() if "/mailer/" in line and "Warning" in line]
    assert ours == [], done.stderr
    return done


def test_deploy_checks_pass_with_no_warning(project):
    done = run(project, "check", "--deploy", "--fail-level", "WARNING")
    assert "System check identified no issues" in done.stdout


def test_django_send_mail_queues_and_send_mail_drains_each_queue_through_its_relay(
    project, smtp_server, second_smtp_server
):
    run(project, "shell", "-c", QUEUE)
    with sqlite3.connect(project["MAILER_TEST_DB_NAME"]) as db:
        assert sorted(db.execute("SELECT mailer, priority FROM mailer_message")) == [("bulk", 3), ("default", 2)]
    assert smtp_server.messages == [] and second_smtp_server.messages == []

    run(project, "send_mail")

    [receipt] = smtp_server.messages
    assert receipt.message["Subject"] == "Receipt" and receipt.rcpt_tos == ["ann@example.org"]
    assert receipt.message.get_body(("html",)).get_content().strip() == "<p>Thanks</p>"
    [newsletter] = second_smtp_server.messages
    assert newsletter.message["Subject"] == "Newsletter" and newsletter.rcpt_tos == ["bob@example.org"]
    with sqlite3.connect(project["MAILER_TEST_DB_NAME"]) as db:
        assert db.execute("SELECT count(*) FROM mailer_message").fetchone() == (0,)
        assert sorted(db.execute("SELECT mailer, result FROM mailer_messagelog")) == [("bulk", "1"), ("default", "1")]
