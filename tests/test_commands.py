"""The management commands: in process with ``call_command``, and in child processes as cron and systemd run them."""

import datetime
import json
import logging
import signal
import smtplib

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_MEDIUM,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
)
from tests.support import backends
from tests.support.logs import mailer_lines
from tests.support.procs import manage, running_command
from tests.support.queueing import queue
from tests.support.sqlite_project import child_env, query, queue_in
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db


# --- send_mail --------------------------------------------------------------------------------------


def test_send_mail_sends_and_logs_a_summary(caplog):
    queue("one", priority=PRIORITY_HIGH)
    queue("two")
    queue("never", priority=PRIORITY_DEFERRED)
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    assert [email.subject for email in mail.outbox] == ["one", "two"]
    assert [m.subject for m in Message.objects.all()] == ["never"]
    summaries = [r.getMessage() for r in caplog.records if r.name == "mailer.engine" and "sent 2" in r.getMessage()]
    assert len(summaries) == 1
    assert "sent 2, deferred 0, skipped 0, failed 0" in summaries[0]


def test_send_mail_summary_counts_deferred_and_skipped(settings, caplog):
    settings.MAILER_EMAIL_BACKEND = f"{backends.HERE}.FailingBackend"
    # 451: transient, so the message waits for its retry, and that is what "deferred" counts.
    backends.FAILURES["refused"] = smtplib.SMTPRecipientsRefused({"to@example.com": (451, b"4.3.0 later")})
    try:
        refused = queue("refused", priority=PRIORITY_HIGH)
        queue("fine")
        skipped = queue("skipped", to=["blocked@example.com"])
        # Put on the don't-send list after the message was queued: honoured at send time.
        DontSendEntry.objects.create(to_address="BLOCKED@example.com", when_added=timezone.now())
        with caplog.at_level(logging.INFO, logger="mailer"):
            call_command("send_mail")
    finally:
        backends.FAILURES.clear()
    assert [email.subject for email in mail.outbox] == ["fine"]
    summary = [m for m in mailer_lines(caplog, "mailer.engine") if m.startswith("Sent: ")]
    assert len(summary) == 1
    assert "sent 1, deferred 1, skipped 1, failed 0" in summary[0]
    assert not Message.objects.filter(pk=skipped.pk).exists()
    assert MessageLog.objects.filter(result=RESULT_DONT_SEND).count() == 1
    assert list(Message.objects.waiting_for_retry()) == [refused]


def test_send_mail_paused_sends_nothing_and_says_so(settings, caplog):
    settings.MAILER_PAUSE_SEND = True
    queue("waits")
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    assert mail.outbox == []
    assert Message.objects.count() == 1
    assert MessageLog.objects.count() == 0
    assert any("pause" in m.lower() for m in mailer_lines(caplog))


@pytest.mark.parametrize("args", [["-c", "1"], ["--cron", "1"], ["--cron=1"]])
def test_send_mail_cron_option_is_accepted_with_a_deprecation_warning(args):
    queue("m")
    with pytest.warns(DeprecationWarning, match="cron"):
        call_command("send_mail", *args)
    assert len(mail.outbox) == 1


@pytest.mark.parametrize("args", [["-c", "1"], ["--cron", "1"]])
def test_retry_deferred_cron_option_is_accepted_with_a_deprecation_warning(args):
    queue("d", priority=PRIORITY_DEFERRED)
    with pytest.warns(DeprecationWarning, match="cron"):
        call_command("retry_deferred", *args)
    assert Message.objects.get().priority == PRIORITY_MEDIUM


def test_no_deprecation_warning_without_cron(recwarn):
    queue("m")
    call_command("send_mail")
    call_command("retry_deferred")
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


# --- retry_deferred ---------------------------------------------------------------------------------


def test_retry_deferred_moves_deferred_back_and_logs_the_count(caplog):
    for n in range(3):
        queue(f"d{n}", priority=PRIORITY_DEFERRED, retry_count=n)
    queue("high", priority=PRIORITY_HIGH)
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("retry_deferred")
    assert Message.objects.deferred().count() == 0
    assert sorted(Message.objects.filter(priority=PRIORITY_MEDIUM).values_list("retry_count", flat=True)) == [1, 2, 3]
    assert Message.objects.get(priority=PRIORITY_HIGH).retry_count == 0
    logged = mailer_lines(caplog, "mailer.management.commands.retry_deferred")
    assert len(logged) == 1 and "3" in logged[0]


def test_retry_deferred_respects_max_retries(settings, caplog):
    settings.MAILER_EMAIL_MAX_RETRIES = 2
    for n in range(4):
        queue(f"d{n}", priority=PRIORITY_DEFERRED, retry_count=n)
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("retry_deferred")
    assert sorted(Message.objects.deferred().values_list("retry_count", flat=True)) == [2, 3]
    assert sorted(Message.objects.non_deferred().values_list("retry_count", flat=True)) == [1, 2]
    logged = mailer_lines(caplog, "mailer.management.commands.retry_deferred")
    assert len(logged) == 1 and "2" in logged[0]


def test_retry_deferred_max_retries_zero_never_retries(settings):
    settings.MAILER_EMAIL_MAX_RETRIES = 0
    queue("d", priority=PRIORITY_DEFERRED)
    call_command("retry_deferred")
    assert Message.objects.get().priority == PRIORITY_DEFERRED


# --- purge_mail_log ---------------------------------------------------------------------------------


@pytest.fixture
def logs():
    """One old (10 days) and one recent (1 day) log entry per result; returns {(result, "old"|"new"): pk}."""
    now = timezone.now()
    made = {}
    for result in (RESULT_SUCCESS, RESULT_DONT_SEND, RESULT_FAILURE):
        for age, days in (("old", 10), ("new", 1)):
            log = MessageLog.objects.create(
                message_data=None,
                message_id=f"<{result}.{age}@example.com>",
                when_added=now - datetime.timedelta(days=days + 1),
                priority=PRIORITY_MEDIUM,
                when_attempted=now - datetime.timedelta(days=days),
                result=result,
                log_message="",
            )
            made[(result, age)] = log.pk
    return made


def remaining(logs):
    left = set(MessageLog.objects.values_list("pk", flat=True))
    return {key for key, pk in logs.items() if pk in left}


def test_purge_mail_log_deletes_old_success_by_default(logs, caplog):
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("purge_mail_log", "7")
    assert remaining(logs) == set(logs) - {(RESULT_SUCCESS, "old")}
    logged = mailer_lines(caplog, "mailer.management.commands.purge_mail_log")
    assert len(logged) == 1 and "1" in logged[0]


def test_purge_mail_log_failure(logs):
    call_command("purge_mail_log", "7", "-r", "failure")
    assert remaining(logs) == set(logs) - {(RESULT_FAILURE, "old")}


def test_purge_mail_log_all(logs, caplog):
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("purge_mail_log", "7", "--result", "all")
    assert remaining(logs) == {(RESULT_SUCCESS, "new"), (RESULT_DONT_SEND, "new"), (RESULT_FAILURE, "new")}
    assert "3" in mailer_lines(caplog, "mailer.management.commands.purge_mail_log")[0]


def test_purge_mail_log_zero_days_deletes_everything_of_that_result(logs):
    call_command("purge_mail_log", "0", "-r", "success")
    assert remaining(logs) == set(logs) - {(RESULT_SUCCESS, "old"), (RESULT_SUCCESS, "new")}


def test_purge_mail_log_reads_the_clock_2_x_test_suites_patch(logs, monkeypatch):
    """django-mailer 2.x read ``mailer.models.datetime_now`` when purging: moving it moves "now" (issue 16)."""
    ten_days_on = timezone.now() + datetime.timedelta(days=10)
    monkeypatch.setattr("mailer.models.datetime_now", lambda: ten_days_on)
    call_command("purge_mail_log", "7")
    assert remaining(logs) == set(logs) - {(RESULT_SUCCESS, "old"), (RESULT_SUCCESS, "new")}


@pytest.mark.parametrize("args", [["-1"], ["abc"], ["1.5"], ["7", "-r", "bogus"], []])
def test_purge_mail_log_bad_arguments_delete_nothing(logs, args):
    with pytest.raises(CommandError):
        call_command("purge_mail_log", *args)
    assert remaining(logs) == set(logs)


def test_send_mail_bad_cron_argument_is_an_error():
    queue("m")
    with pytest.raises(CommandError):
        call_command("send_mail", "-c", "abc")
    assert mail.outbox == []
    assert Message.objects.count() == 1


# --- In child processes -----------------------------------------------------------------------------


def test_send_mail_in_a_child_process_delivers_over_smtp(sqlite_project, smtp_server):
    queue_in(sqlite_project, "from cron")
    queue_in(sqlite_project, "second")
    assert query(sqlite_project, "SELECT count(*) FROM mailer_message") == [(2,)]

    done = manage("send_mail", env=child_env(sqlite_project))
    assert done.returncode == 0, done.stderr
    received = smtp_server.wait_for(2)
    assert sorted(r.message["Subject"] for r in received) == ["from cron", "second"]
    assert received[0].rcpt_tos == ["to@example.com"]
    assert query(sqlite_project, "SELECT count(*) FROM mailer_message") == [(0,)]
    assert query(sqlite_project, "SELECT result, count(*) FROM mailer_messagelog GROUP BY result") == [
        (RESULT_SUCCESS, 2)
    ]
    # The project's LOGGING decides where the summary goes: tests/project/settings.py sends it to stderr.
    assert "mailer.engine: Sent: sent 2, deferred 0, skipped 0, failed 0" in done.stderr

    again = manage("send_mail", env=child_env(sqlite_project))
    assert again.returncode == 0, again.stderr
    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize(
    "args",
    [["purge_mail_log", "-1"], ["purge_mail_log", "abc"], ["purge_mail_log", "7", "-r", "bogus"]],
)
def test_bad_arguments_exit_non_zero_in_a_child_process(sqlite_project, args):
    queue_in(sqlite_project, "stays")
    done = manage(*args, env=child_env(sqlite_project))
    assert done.returncode != 0
    assert "error" in done.stderr.lower()
    assert query(sqlite_project, "SELECT count(*) FROM mailer_message") == [(1,)]


def test_runmailer_delivers_mail_queued_while_it_runs_and_stops_on_sigint(sqlite_project, smtp_server):
    env = {**child_env(sqlite_project), "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.2"}
    with running_command("runmailer", env=env) as proc:
        first_line = proc.stdout.readline()  # the date; then the banner
        assert first_line, proc.stderr.read()
        assert "Starting django-mailer send loop" in proc.stdout.readline()
        queue_in(sqlite_project, "while running")
        received = smtp_server.wait_for(1, timeout=30)
        assert received[0].message["Subject"] == "while running"
        queue_in(sqlite_project, "and another")
        smtp_server.wait_for(2, timeout=30)
        # Delivered, but maybe not yet recorded: a stop now could leave it queued (see the engine's docstring).
        wait_until(lambda: query(sqlite_project, "SELECT count(*) FROM mailer_messagelog") == [(2,)])
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Stopped." in out
    assert "Traceback" not in err
    assert query(sqlite_project, "SELECT count(*) FROM mailer_message") == [(0,)]
    assert query(sqlite_project, "SELECT count(*) FROM mailer_messagelog WHERE result = '1'") == [(2,)]
    assert [r.message["Subject"] for r in smtp_server.messages] == ["while running", "and another"]


def test_runmailer_stops_on_sigint_while_idle(sqlite_project):
    env = {**child_env(sqlite_project), "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.2"}
    with running_command("runmailer", env=env) as proc:
        proc.stdout.readline()
        assert "Starting" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Stopped." in out
    # The project is on SQLite: runmailer says, when it starts, what that means (docs/checks.rst).
    assert "mailer.W005" in err


def test_runmailer_stops_on_sigterm_after_the_message_in_hand(sqlite_project, smtp_server):
    """SIGTERM (what systemd sends) ends the loop cleanly: what was sent is recorded, the rest stays queued."""
    for n in range(3):
        queue_in(sqlite_project, f"message {n}")
    env = {**child_env(sqlite_project), "MAILER_TEST_SETTINGS": json.dumps({"MAILER_EMAIL_THROTTLE": 60})}
    with running_command("runmailer", env=env) as proc:
        smtp_server.wait_for(1, timeout=30)
        proc.send_signal(signal.SIGTERM)  # during the 60 s throttle nap after the first message
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Stopped." in out
    assert len(smtp_server.messages) == 1
    assert query(sqlite_project, "SELECT count(*) FROM mailer_messagelog WHERE result = '1'") == [(1,)]
    assert query(sqlite_project, "SELECT count(*) FROM mailer_message") == [(2,)]
