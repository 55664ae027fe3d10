"""System checks (``manage.py check``) that hold on every supported Django; the MAILERS ones are in test_mailers."""

import pytest
from django.conf import settings
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from mailer.checks import check_delivery, check_senders, run_command_checks
from mailer.routing import mailers_configured


def ids():
    # On Django 6.1 tests/settings.py names the real sender with MAILER_EMAIL_BACKEND next to MAILERS, which
    # works (and lets tests swap it) but is not the recommended configuration, and so silences mailer.W002.
    silenced = settings.SILENCED_SYSTEM_CHECKS
    return sorted(message.id for message in check_delivery() if message.id not in silenced)


def test_the_test_settings_pass():
    assert ids() == []
    call_command("check", fail_level="WARNING")


def test_queue_backend_as_real_sender(settings):
    settings.MAILER_EMAIL_BACKEND = "mailer.backend.DbBackend"
    assert ids() == ["mailer.E001"]
    with pytest.raises(SystemCheckError, match="mailer.E001"):
        call_command("check")


def test_real_sender_that_cannot_be_imported(settings):
    settings.MAILER_EMAIL_BACKEND = "no.such.Backend"
    assert ids() == ["mailer.E002"]


def test_deliver_using_needs_mailers(settings):
    if mailers_configured():
        del settings.MAILERS
    settings.MAILER_DELIVER_USING = "smtp"
    assert ids() == ["mailer.E001"]
    assert "needs Django 6.1+ and MAILERS" in check_delivery()[0].msg


# --- Senders: the file lock and the database ----------------------------------------------------


def vendor():
    return connection.vendor


def test_no_file_lock_on_sqlite_is_a_warning(settings):
    settings.MAILER_USE_FILE_LOCK = False
    assert [m.id for m in check_senders()] == (["mailer.W003"] if vendor() == "sqlite" else [])


def test_a_lock_directory_that_cannot_be_written(settings, tmp_path):
    settings.MAILER_LOCK_PATH = str(tmp_path / "missing" / "send_mail")
    assert [m.id for m in check_senders()] == ["mailer.W004"]
    settings.MAILER_LOCK_PATH = str(tmp_path / "send_mail")
    assert check_senders() == []


def test_runmailer_on_sqlite_is_a_warning_when_it_starts():
    assert [m.id for m in run_command_checks("runmailer")] == (["mailer.W005"] if vendor() == "sqlite" else [])


def test_runmailer_pg_needs_postgresql():
    if vendor() == "postgresql":
        assert run_command_checks("runmailer_pg") == []
    else:
        with pytest.raises(SystemCheckError, match="mailer.E005"):
            run_command_checks("runmailer_pg")


def test_command_checks_stay_out_of_manage_py_check(settings):
    # A project on SQLite that sends from cron must not hear about runmailer.
    assert "mailer.W005" not in {m.id for m in checks.run_checks()}
