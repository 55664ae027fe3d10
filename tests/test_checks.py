"""System checks (``manage.py check``) that hold on every supported Django; the MAILERS ones are in test_mailers."""

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from mailer.checks import check_delivery
from mailer.delivery import mailers_configured


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
