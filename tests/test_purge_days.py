"""``purge_mail_log DAYS``: a DAYS out of range is a usage error naming the range, never a traceback."""

import datetime

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from mailer.models import PRIORITY_MEDIUM, RESULT_SUCCESS, MessageLog
from tests.support.procs import manage

pytestmark = pytest.mark.django_db

RANGE = "between 0 and 365000"


def old_log_entry(days_ago: int) -> MessageLog:
    when = timezone.now() - datetime.timedelta(days=days_ago)
    return MessageLog.objects.create(
        when_added=when, when_attempted=when, priority=PRIORITY_MEDIUM, result=RESULT_SUCCESS, log_message=""
    )


@pytest.mark.parametrize("days", ["999999999", "365001", str(10**30), "-1"])
def test_days_out_of_range_is_a_command_error(days):
    entry = old_log_entry(400)
    with pytest.raises(CommandError, match=RANGE if days != "-1" else "negative"):
        call_command("purge_mail_log", days)
    assert MessageLog.objects.filter(pk=entry.pk).exists()


def test_the_largest_allowed_days_runs_on_every_database():
    """365000 days back is the year 1000 or later, which every database's datetime column can compare with."""
    entry = old_log_entry(400)
    call_command("purge_mail_log", "365000", "-r", "all")
    assert MessageLog.objects.filter(pk=entry.pk).exists()
    call_command("purge_mail_log", "399")
    assert not MessageLog.objects.filter(pk=entry.pk).exists()


@pytest.mark.parametrize("days", ["999999999", "-5"])
def test_days_out_of_range_in_a_child_process_is_a_usage_error(tmp_path, days):
    env = {"MAILER_TEST_DB": "sqlite", "MAILER_TEST_DB_NAME": str(tmp_path / "purge.sqlite3")}
    migrated = manage("migrate", "--no-input", env=env)
    assert migrated.returncode == 0, migrated.stderr
    done = manage("purge_mail_log", days, env=env)
    assert done.returncode == 2, done.stderr  # argparse's usage error
    assert "Traceback" not in done.stderr
    assert "purge_mail_log: error: argument days:" in done.stderr
    assert (RANGE if days != "-5" else "negative") in done.stderr
