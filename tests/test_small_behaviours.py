"""Small behaviours: mail without recipients, a backend path that cannot be imported with the checks skipped,
the mailer.E001 hint for the running Django, and no Django 6.1 deprecation warning from the package."""

import json
import re

import django
import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.utils import timezone

import mailer
from mailer.backend import DbBackend
from mailer.checks import check_delivery
from mailer.models import RESULT_DONT_SEND, DontSendEntry, Message, MessageLog
from tests.support.procs import manage
from tests.support.project_db import migrated_project, run_in_project, send_mail_in_project, table_counts
from tests.support.relays import ScriptedRelay

pytestmark = pytest.mark.django_db


# --- No recipients --------------------------------------------------------------------------------------


def test_send_mail_without_recipients_queues_and_logs_nothing_and_returns_0():
    # As django.core.mail.send_mail(), which returns 0 for an empty recipient list.
    assert mail.send_mail("s", "b", "f@example.com", []) == 0
    assert mailer.send_mail("s", "b", "f@example.com", []) == 0
    assert mailer.send_html_mail("s", "b", "<p>b</p>", "f@example.com", []) == 0
    assert DbBackend().send_messages([EmailMessage("s", "b", "f@example.com", [])]) == 0
    assert mailer.send_mass_mail([("s", "b", "f@example.com", []), ("t", "b", "f@example.com", ["a@example.com"])]) == 1
    assert Message.objects.count() == 1
    assert not MessageLog.objects.exists()


def test_a_message_whose_recipients_are_all_blocked_is_still_logged_as_dont_send():
    DontSendEntry.objects.create(to_address="gone@example.com", when_added=timezone.now())
    assert mailer.send_mail("s", "b", "f@example.com", ["gone@example.com"]) == 1  # as 2.3.2
    assert not Message.objects.exists()
    assert list(MessageLog.objects.values_list("result", flat=True)) == [RESULT_DONT_SEND]


# --- A backend that cannot be imported, checks skipped ----------------------------------------------------


@pytest.mark.parametrize("command", ["send_mail", "runmailer"])
def test_an_unimportable_backend_holds_the_mail_back_and_says_what_to_fix_once(tmp_path, command):
    with migrated_project(tmp_path, "unimportable", MAILER_TEST_SETTINGS=json.dumps({"LOGGING": {}})) as project:
        project = {**project, "MAILER_TEST_EMAIL_BACKEND": "no.such.Backend"}
        send_mail_in_project(project, 2)
        done = manage(command, "--skip-checks", env=project, timeout=60)
        counts = table_counts(project)
    assert done.returncode == 1, (done.stdout, done.stderr)
    [line] = [line for line in done.stderr.splitlines() if "no.such.Backend" in line]
    assert line.startswith("CommandError: MAILER_EMAIL_BACKEND is 'no.such.Backend', which cannot be imported")
    assert "held back" in line
    assert "Traceback" not in done.stderr
    assert counts == {"queued": 2, "deferred": 0, "logs": {"1": 0, "2": 0, "3": 0}}  # untouched, nobody blamed


def test_the_system_check_still_names_it(settings):
    settings.MAILER_EMAIL_BACKEND = "no.such.Backend"
    assert [message.id for message in check_delivery() if message.id in ("mailer.E001", "mailer.E002")] == [
        "mailer.E002"
    ]


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_an_unimportable_mailers_backend_holds_the_mail_back(settings):
    from mailer import engine

    settings.MAILERS = {
        "default": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "broken"}},
        "broken": {"BACKEND": "no.such.Backend"},
    }
    del settings.MAILER_EMAIL_BACKEND
    mailer.send_mail("s", "b", "f@example.com", ["to@example.com"])
    with pytest.raises(django.core.exceptions.ImproperlyConfigured, match="cannot be imported"):
        engine.send_all()
    assert Message.objects.non_deferred().count() == 1
    assert not MessageLog.objects.exists()


# --- mailer.E001's hint -----------------------------------------------------------------------------------


def test_the_e001_hint_points_to_the_running_djangos_docs(settings):
    settings.MAILER_EMAIL_BACKEND = "mailer.backend.DbBackend"  # a loop: mailer.E001
    [error] = [message for message in check_delivery() if message.id == "mailer.E001"]
    version = f"{django.VERSION[0]}.{django.VERSION[1]}"
    assert f"https://docs.djangoproject.com/en/{version}/topics/email/" in error.hint
    if django.VERSION < (6, 1):
        assert "MAILERS" not in error.hint and "'Installation'" in error.hint
    else:
        assert "'Django 6.1 and MAILERS'" in error.hint


# --- Django 6.1 without MAILERS ---------------------------------------------------------------------------


@pytest.mark.skipif(django.VERSION < (6, 1), reason="RemovedInDjango2028Warning is Django 6.1's")
def test_no_django_deprecation_warning_from_the_package_without_mailers(tmp_path):
    with ScriptedRelay() as relay, migrated_project(tmp_path, "warnings", MAILER_TEST_SMTP_PORT=str(relay.port)) as env:
        run_in_project(env, "import mailer; mailer.send_mail('s', 'b', 'f@example.com', ['to@example.com'])")
        done = manage("send_mail", env={**env, "PYTHONWARNINGS": "always"})
        assert relay.received() == ["to@example.com"]
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if re.search(r"mailer/\w+\.py:\d+: \w*Warning", line)]
    assert ours == []
