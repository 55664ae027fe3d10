"""``mailer.status.queue_status()`` and ``manage.py mailer_status``: in process, and in child processes on the
database under test (``MAILER_TEST_DB``)."""

import datetime
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from mailer import serialization
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    MessageLog,
)
from mailer.status import QueueStatus, ResultCounts, queue_status
from tests.support.procs import manage
from tests.support.project_db import migrated_project, run_in_project
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
TOP_KEYS = ["checked_at", "queue", "oldest_queued", "oldest_queued_age_seconds", "next_retry"]
TOP_KEYS += ["next_retry_in_seconds", "next_scheduled", "next_scheduled_in_seconds", "paused_relays"]
TOP_KEYS += ["behind_paused_relays", "log", "last_success", "last_success_age_seconds"]

# What the queued rows hold: the status counts rows and never decodes them.
UNDECODED = "not decoded by the status"


def ago(**delta):
    return NOW - datetime.timedelta(**delta)


def log(result, attempted, data="not decoded either"):
    return MessageLog.objects.create(
        message_data=data,
        when_added=attempted - datetime.timedelta(seconds=5),
        priority=PRIORITY_MEDIUM,
        when_attempted=attempted,
        result=result,
        log_message="",
    )


def typical_log():
    """Entries written in the order they were attempted, as senders write them (ids grow with time)."""
    for attempted, results in [
        (ago(days=3), [RESULT_SUCCESS, RESULT_FAILURE]),
        (ago(hours=25), [RESULT_SUCCESS, RESULT_DONT_SEND]),
        (ago(hours=5), [RESULT_SUCCESS, RESULT_SUCCESS, RESULT_FAILURE, RESULT_DONT_SEND]),
        (ago(minutes=30), [RESULT_FAILURE, RESULT_SUCCESS]),
        (ago(minutes=2), [RESULT_SUCCESS, RESULT_DONT_SEND]),
    ]:
        for result in results:
            log(result, attempted)


# --- queue_status() ---------------------------------------------------------------------------------


def test_empty_queue_and_log():
    status = queue_status(now=NOW)
    assert (status.high, status.medium, status.low, status.deferred, status.total) == (0, 0, 0, 0, 0)
    assert status.oldest_queued is None and status.oldest_queued_age is None
    assert status.last_hour == status.last_day == ResultCounts(0, 0, 0)
    assert status.last_success is None and status.last_success_age is None


def test_queue_by_priority_and_the_oldest_waiting_message():
    queue(priority=PRIORITY_HIGH, added=ago(minutes=5), data=UNDECODED)
    queue(priority=PRIORITY_MEDIUM, added=ago(minutes=50), data=UNDECODED)
    queue(priority=PRIORITY_MEDIUM, added=ago(minutes=1), data=UNDECODED)
    queue(priority=PRIORITY_LOW, added=ago(minutes=20), data=UNDECODED)
    queue(priority=PRIORITY_DEFERRED, added=ago(days=2), data=UNDECODED)  # older, but deferred: not waiting to be sent
    queue(priority=PRIORITY_DEFERRED, added=ago(days=1), data=UNDECODED)
    status = queue_status(now=NOW)
    assert (status.high, status.medium, status.low, status.deferred) == (1, 2, 1, 2)
    assert status.queued == 4
    assert status.total == 6
    assert status.oldest_queued == ago(minutes=50)
    assert status.oldest_queued_age == 3000.0


def test_only_deferred_mail_has_no_oldest():
    queue(priority=PRIORITY_DEFERRED, added=ago(days=2), data=UNDECODED)
    status = queue_status(now=NOW)
    assert status.deferred == status.total == 1
    assert status.oldest_queued is None


def test_a_message_queued_by_a_clock_ahead_is_zero_seconds_old():
    queue(added=NOW + datetime.timedelta(minutes=3), data=UNDECODED)
    assert queue_status(now=NOW).oldest_queued_age == 0.0


def test_log_counts_over_the_last_hour_and_day_and_the_last_success():
    typical_log()
    status = queue_status(now=NOW)
    assert status.last_hour == ResultCounts(success=2, dont_send=1, failure=1)
    assert status.last_day == ResultCounts(success=4, dont_send=2, failure=2)
    assert status.last_success == ago(minutes=2)
    assert status.last_success_age == 120.0


def test_last_success_older_than_a_day_is_still_found():
    log(RESULT_SUCCESS, ago(days=3))
    log(RESULT_SUCCESS, ago(days=2))
    log(RESULT_FAILURE, ago(hours=30))
    log(RESULT_FAILURE, ago(minutes=10))
    status = queue_status(now=NOW)
    assert status.last_day == ResultCounts(success=0, dont_send=0, failure=1)
    assert status.last_success == ago(days=2)


def test_a_log_with_only_recent_entries():
    log(RESULT_SUCCESS, ago(hours=2))
    log(RESULT_FAILURE, ago(seconds=10))
    status = queue_status(now=NOW)
    assert status.last_hour == ResultCounts(success=0, dont_send=0, failure=1)
    assert status.last_day == ResultCounts(success=1, dont_send=0, failure=1)
    assert status.last_success == ago(hours=2)


def test_the_whole_log_by_result_only_when_asked(django_assert_num_queries):
    typical_log()
    log(RESULT_SUCCESS, ago(hours=3))
    windowed = queue_status(now=NOW)
    assert windowed.log_total is None  # mailer_status reads the last day only
    with django_assert_num_queries(3):  # the pauses, the queue, the whole log in one GROUP BY result
        status = queue_status(now=NOW, whole_log=True)
    assert status.log_total == ResultCounts(success=7, dont_send=3, failure=3)
    for result, name in [(RESULT_SUCCESS, "success"), (RESULT_DONT_SEND, "dont_send"), (RESULT_FAILURE, "failure")]:
        assert getattr(status.log_total, name) == MessageLog.objects.filter(result=result).count()
    # The windows and the last success are those of the last day's reading.
    assert (status.last_hour, status.last_day, status.last_success) == (
        windowed.last_hour,
        windowed.last_day,
        windowed.last_success,
    )


def test_the_whole_log_finds_an_old_last_success_in_the_same_query(django_assert_num_queries):
    log(RESULT_SUCCESS, ago(days=3))
    log(RESULT_SUCCESS, ago(days=2))
    log(RESULT_FAILURE, ago(minutes=10))
    with django_assert_num_queries(3):
        status = queue_status(now=NOW, whole_log=True)
    assert status.last_success == ago(days=2)
    assert status.log_total == ResultCounts(success=2, dont_send=0, failure=1)
    assert status.last_day == ResultCounts(success=0, dont_send=0, failure=1)


def test_few_queries_and_no_message_is_decoded(monkeypatch, django_assert_num_queries):
    typical_log()
    queue(priority=PRIORITY_HIGH, added=ago(minutes=5), data="garbage that does not decode")
    queue(priority=PRIORITY_DEFERRED, added=ago(days=1), data="")

    def refuse(*args, **kwargs):
        raise AssertionError("the status decoded message data")

    monkeypatch.setattr(serialization, "loads", refuse)
    # The relays' pauses; the queue by priority; the start of the last day in the log; the last day by result
    # and window.
    with django_assert_num_queries(4):
        status = queue_status(now=NOW)
    assert (status.high, status.deferred) == (1, 1)
    # No success within the day: one more query for the last success.
    with django_assert_num_queries(5):
        status = queue_status(now=NOW + datetime.timedelta(days=2))
    assert status.last_success == ago(minutes=2)


def test_as_dict_has_every_documented_field():
    queue(priority=PRIORITY_LOW, added=ago(seconds=90), data=UNDECODED)
    queue(priority=PRIORITY_DEFERRED, added=NOW, data=UNDECODED)
    log(RESULT_SUCCESS, ago(minutes=3))
    data = queue_status(now=NOW).as_dict()
    assert list(data) == TOP_KEYS
    assert data["checked_at"] == NOW.isoformat()
    assert data["queue"] == {
        "high": 0,
        "medium": 0,
        "low": 1,
        "waiting": 0,
        "scheduled": 0,
        "deferred": 1,
        "other": 0,
        "total": 2,
    }
    assert data["oldest_queued"] == ago(seconds=90).isoformat()
    assert data["oldest_queued_age_seconds"] == 90.0
    assert data["log"] == {
        "last_hour": {"success": 1, "dont_send": 0, "failure": 0},
        "last_day": {"success": 1, "dont_send": 0, "failure": 0},
    }
    assert data["last_success"] == ago(minutes=3).isoformat()
    assert data["last_success_age_seconds"] == 180.0
    assert json.loads(json.dumps(data)) == data


def test_as_dict_of_an_empty_queue():
    data = queue_status(now=NOW).as_dict()
    assert data["oldest_queued"] is None and data["oldest_queued_age_seconds"] is None
    assert data["last_success"] is None and data["last_success_age_seconds"] is None


def test_queue_status_is_a_frozen_dataclass():
    status = queue_status(now=NOW)
    assert isinstance(status, QueueStatus)
    with pytest.raises(AttributeError):
        status.high = 3


# --- mailer_status, in process ----------------------------------------------------------------------


def run(*args):
    """Run mailer_status; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("mailer_status", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_table():
    queue(priority=PRIORITY_HIGH, added=timezone.now() - datetime.timedelta(minutes=12, seconds=5), data=UNDECODED)
    queue(priority=PRIORITY_DEFERRED, added=NOW, data=UNDECODED)
    typical_log()
    code, out, err = run()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Queue"
    assert lines[1].split() == ["high", "1"]
    assert lines[4].split() == ["waiting", "0"]
    assert lines[5].split() == ["scheduled", "0"]
    assert lines[6].split() == ["deferred", "1"]
    assert lines[7].split() == ["total", "2"]
    assert lines[8].startswith("  oldest ") and "(12m 5s ago)" in lines[8]
    assert lines[9] == "  next retry  -"
    assert lines[10] == "  next scheduled  -"
    assert lines[12].split() == ["Log", "last", "hour", "last", "day"]
    assert lines[13].split() == ["success", "2", "4"]
    assert lines[14].split() == ["don't", "send", "1", "2"]
    assert lines[15].split() == ["failure", "1", "2"]
    assert lines[16].startswith("  last success ") and "ago)" in lines[16]
    assert lines[17:] == ["", "Senders     0 live"]  # no relay is paused: no such part; no sender has run


def test_table_of_an_empty_queue():
    code, out, _ = run()
    assert code == 0
    assert "  oldest    -" in out
    assert "  last success  -" in out


def test_json_is_one_object_on_one_line():
    queue(priority=PRIORITY_MEDIUM, added=timezone.now() - datetime.timedelta(hours=2), data=UNDECODED)
    log(RESULT_SUCCESS, timezone.now() - datetime.timedelta(minutes=1))
    code, out, err = run("--json")
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    data = json.loads(out)
    assert list(data) == [*TOP_KEYS, "senders"]  # the queue's figures (status.as_dict()), then the senders
    assert data["senders"] == []  # none has run: no heartbeat row
    assert data["queue"]["medium"] == 1
    assert 7200 <= data["oldest_queued_age_seconds"] < 7300
    assert data["log"]["last_hour"]["success"] == 1


def test_max_age_fails_with_an_old_message():
    queue(priority=PRIORITY_LOW, added=timezone.now() - datetime.timedelta(hours=1), data=UNDECODED)
    code, out, err = run("--json", "--max-age", "600")
    assert code == 1
    assert json.loads(out)["queue"]["low"] == 1  # the report is printed all the same
    assert "oldest queued message has waited" in err
    assert "--max-age 600" in err


def test_max_age_passes_with_young_mail_or_none():
    assert run("--max-age", "600")[0] == 0
    # deferred mail is not waiting
    queue(priority=PRIORITY_DEFERRED, added=timezone.now() - datetime.timedelta(days=3), data=UNDECODED)
    queue(priority=PRIORITY_HIGH, added=timezone.now() - datetime.timedelta(seconds=30), data=UNDECODED)
    code, _, err = run("--max-age", "600")
    assert (code, err) == (0, "")


def test_max_deferred():
    for _ in range(3):
        queue(priority=PRIORITY_DEFERRED, added=NOW, data=UNDECODED)
    assert run("--max-deferred", "3")[0] == 0
    code, _, err = run("--max-deferred", "2")
    assert code == 1
    assert "3 message(s) deferred, more than --max-deferred 2" in err


def test_both_checks_fail_with_a_line_each():
    queue(priority=PRIORITY_HIGH, added=timezone.now() - datetime.timedelta(hours=3), data=UNDECODED)
    queue(priority=PRIORITY_DEFERRED, added=NOW, data=UNDECODED)
    code, _, err = run("--max-age", "60", "--max-deferred", "0")
    assert code == 1
    assert len(err.splitlines()) == 2


@pytest.mark.parametrize("args", [["--max-age", "-1"], ["--max-age", "soon"], ["--max-deferred", "1.5"]])
def test_bad_arguments(args):
    with pytest.raises(CommandError):
        call_command("mailer_status", *args)


# --- mailer_status in a child process, on the database under test -------------------------------------


@pytest.fixture
def project_db(tmp_path):
    """A migrated database of the vendor under test for ``tests.project``: the env for ``manage``."""
    with migrated_project(tmp_path, "mailer_status") as env:
        yield env


OLD_MAIL = """
import datetime, mailer
from django.utils import timezone
from mailer.models import Message
mailer.send_mail("old", "body", "from@example.com", ["to@example.com"], priority="low")
mailer.send_mail("new", "body", "from@example.com", ["to@example.com"], priority="high")
Message.objects.filter(priority=3).update(when_added=timezone.now() - datetime.timedelta(hours=2))
"""


def test_json_and_exit_status_in_a_child_process(project_db):
    done = manage("mailer_status", "--json", "--max-age", "60", env=project_db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["queue"]["total"] == 0
    assert done.stderr == ""  # nothing for cron to mail while all is well

    run_in_project(project_db, OLD_MAIL)

    done = manage("mailer_status", "--json", "--max-age", "3600", env=project_db)
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["queue"] == {
        "high": 1,
        "medium": 0,
        "low": 1,
        "waiting": 0,
        "scheduled": 0,
        "deferred": 0,
        "other": 0,
        "total": 2,
    }
    assert 7200 <= data["oldest_queued_age_seconds"] < 7500
    assert "longer than --max-age 3600" in done.stderr

    assert manage("mailer_status", "--max-age", "9000", env=project_db).returncode == 0
    table = manage("mailer_status", env=project_db)
    assert table.returncode == 0 and "Queue" in table.stdout and "(2h 0m ago)" in table.stdout


def test_bad_arguments_in_a_child_process(project_db):
    done = manage("mailer_status", "--max-age", "-5", env=project_db)
    assert done.returncode == 2
    assert "negative" in done.stderr
