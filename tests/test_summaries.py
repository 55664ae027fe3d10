"""The one-line summary each command logs at the end, and ``send_mail``'s progress bar on a terminal.

In process with ``call_command`` and ``caplog``; in child processes through the project's ``LOGGING``
(``tests/project/settings.py`` prints INFO on stderr), with stderr a pipe (as under cron) or a terminal.
"""

import io
import logging
import os
import re
import signal
import smtplib
import threading

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from mailer.engine import SendResult, send_all, send_loop
from mailer.management.progress import ProgressBar, RunTotals
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
from tests.support import dbconfig
from tests.support.locks import lock_held_elsewhere
from tests.support.logs import mailer_lines
from tests.support.procs import manage, popen_manage, running_command
from tests.support.project_db import migrated_project, run_in_project, send_mail_in_project, table_counts
from tests.support.queueing import queue
from tests.support.senders import SenderProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db

SECONDS = r"\d+\.\d\ds"
SEND_SUMMARY = re.compile(rf"^Sent: sent (\d+), deferred (\d+), skipped (\d+), failed (\d+) in {SECONDS}$")


def summaries(caplog, prefix):
    """The lines logged at INFO that start with ``prefix`` ("Sent:", "Stopped:"...), by any mailer logger."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("mailer") and r.levelno == logging.INFO and r.getMessage().startswith(prefix)
    ]


# --- send_mail ----------------------------------------------------------------------------------------


def test_send_mail_logs_its_summary_once(caplog):
    queue("one", priority=PRIORITY_HIGH)
    queue("two")
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    [line] = summaries(caplog, "Sent:")
    assert SEND_SUMMARY.match(line).groups() == ("2", "0", "0", "0")


def test_send_mail_summary_with_every_count(failures, caplog):
    # Deferred: a transient refusal (451) leaves the message waiting for its retry; failed: the corrupt row.
    failures["refused"] = smtplib.SMTPRecipientsRefused({"to@example.com": (451, b"4.3.0 later")})
    queue("refused", priority=PRIORITY_HIGH)
    queue("fine")
    queue("blocked", to=["blocked@example.com"])
    DontSendEntry.objects.create(to_address="blocked@example.com", when_added=timezone.now())
    undecodable = queue("corrupt")
    Message.objects.filter(pk=undecodable.pk).update(message_data="not a message")
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    [line] = summaries(caplog, "Sent:")
    assert SEND_SUMMARY.match(line).groups() == ("1", "1", "1", "1")


def test_send_mail_with_an_empty_queue_still_logs_a_summary(caplog):
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    [line] = summaries(caplog, "Sent:")
    assert SEND_SUMMARY.match(line).groups() == ("0", "0", "0", "0")


def test_send_mail_says_so_when_another_run_holds_the_lock(lock_path, caplog):
    queue("waits")
    with lock_held_elsewhere(lock_path), caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    assert mail.outbox == []
    [line] = summaries(caplog, "Sent:")
    assert re.match(rf"^Sent: nothing in {SECONDS}, another run holds the lock {re.escape(lock_path)}\.lock$", line)
    # The lock's own error is still there, as before.
    assert any("lock already in place" in m for m in mailer_lines(caplog, "mailer.locking"))


def test_send_mail_summary_when_a_poison_message_stops_the_run(failures, caplog):
    failures["poison"] = ValueError("poisoned\nover two lines")
    queue("good", priority=PRIORITY_HIGH)
    queue("poison")
    queue("later", priority=3)
    with caplog.at_level(logging.INFO, logger="mailer"), pytest.raises(ValueError):
        call_command("send_mail")
    [line] = summaries(caplog, "Sent:")
    assert re.match(
        rf"^Sent: sent 1, deferred 0, skipped 0, failed 1 in {SECONDS}, "
        r"then stopped by ValueError: poisoned over two lines$",
        line,
    )


def test_send_mail_paused_logs_one_line(settings, caplog):
    settings.MAILER_PAUSE_SEND = True
    queue("waits")
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    assert mailer_lines(caplog) == ["sending is paused (MAILER_PAUSE_SEND), quitting."]


def test_send_mail_prints_nothing_on_stdout_nor_a_bar_when_stderr_is_not_a_terminal():
    queue("one")
    out, err = io.StringIO(), io.StringIO()
    call_command("send_mail", stdout=out, stderr=err)
    assert len(mail.outbox) == 1
    assert (out.getvalue(), err.getvalue()) == ("", "")


# --- the progress callback of send_all() ------------------------------------------------------------------


def test_send_all_calls_progress_after_each_message_with_a_copy(failures):
    failures["refused"] = smtplib.SMTPRecipientsRefused({"to@example.com": (451, b"4.3.0 later")})
    queue("a", priority=PRIORITY_HIGH)
    queue("refused")
    queue("blocked", to=["blocked@example.com"])
    DontSendEntry.objects.create(to_address="blocked@example.com", when_added=timezone.now())
    seen = []
    result = send_all(progress=seen.append)
    # The don't-send list is applied to a claimed batch before its deliveries.
    assert [(r.sent, r.deferred, r.skipped, r.failed) for r in seen] == [(0, 0, 1, 0), (1, 0, 1, 0), (1, 1, 1, 0)]
    assert all(r is not result for r in seen)
    assert (result.sent, result.deferred, result.skipped) == (1, 1, 1)


def test_progress_with_several_connections_runs_in_the_calling_thread(settings):
    settings.MAILER_SENDER_CONNECTIONS = 3
    for n in range(7):
        queue(f"m{n}")
    seen = []
    result = send_all(progress=lambda r: seen.append((r.sent, threading.current_thread())))
    assert result.sent == 7
    assert [sent for sent, _ in seen] == list(range(1, 8))
    assert {thread for _, thread in seen} == {threading.current_thread()}


def test_a_progress_callback_that_raises_does_not_break_the_pass(caplog):
    for n in range(3):
        queue(f"m{n}")
    calls = []

    def broken(result):
        calls.append(result)
        raise BrokenPipeError("stderr went away")

    with caplog.at_level(logging.WARNING, logger="mailer"):
        result = send_all(progress=broken)
    assert result.sent == 3 and len(mail.outbox) == 3
    assert len(calls) == 1
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 3
    assert len([r for r in caplog.records if "progress callback raised" in r.getMessage()]) == 1


# --- ProgressBar ------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_bar_rendering():
    bar = ProgressBar(io.StringIO(), 500, width=10)
    assert bar.render(SendResult(sent=120)) == "sent 120/500 [=>        ]  24%"
    assert bar.render(SendResult()) == "sent 0/500 [          ]   0%"
    assert bar.render(SendResult(sent=500)) == "sent 500/500 [==========] 100%"
    assert (
        bar.render(SendResult(sent=248, deferred=1, skipped=1))
        == "sent 248/500 [====>     ]  50% (deferred 1, skipped 1, failed 0)"
    )
    assert bar.render(SendResult(sent=510)) == "sent 510/510 [==========] 100%"  # queued during the pass
    assert ProgressBar(io.StringIO(), 0, width=4).render(SendResult()) == "sent 0/0 [====] 100%"


def test_progress_bar_redraws_in_place_at_most_every_interval_and_ends_with_a_newline():
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream, 4, width=4, interval=0.5, clock=clock)
    bar(SendResult(sent=1))
    bar(SendResult(sent=2))  # too soon: not drawn
    clock.now += 1
    bar(SendResult(sent=3))
    bar(SendResult(sent=4))  # the last one is always drawn
    bar.close()
    bar.close()
    assert stream.getvalue() == ("\rsent 1/4 [>   ]  25%\rsent 3/4 [==> ]  75%\rsent 4/4 [====] 100%\n")


def test_progress_bar_finishes_with_the_last_counts():
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar(stream, 10, width=2, interval=60, clock=clock)
    bar(SendResult(sent=1))
    bar(SendResult(sent=2, deferred=1))
    bar.close()
    assert stream.getvalue() == "\rsent 1/10 [  ]  10%\rsent 2/10 [  ]  30% (deferred 1, skipped 0, failed 0)\n"


def test_progress_bar_draws_nothing_when_nothing_was_sent():
    stream = io.StringIO()
    ProgressBar(stream, 0).close()
    assert stream.getvalue() == ""


def test_log_lines_on_the_same_stream_wipe_the_bar_first():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    logger = logging.getLogger("mailer.tests.bar")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        bar = ProgressBar(stream, 2, width=2, interval=0)
        bar(SendResult(sent=1))
        logger.warning("between")
        bar(SendResult(sent=2))
        bar.close()
        logger.warning("after")  # the bar is closed: its filter is gone
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert stream.getvalue() == (
        "\rsent 1/2 [> ]  50%\r                  \rLOG between\n\rsent 2/2 [==] 100%\nLOG after\n"
    )
    assert handler.filters == []


def visible_lines(raw: str) -> list[str]:
    """What a terminal shows: each line after its carriage returns overwrite it from the left."""
    shown = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        screen = ""
        for part in line.split("\r"):
            screen = part + screen[len(part) :]
        shown.append(screen.rstrip())
    return shown


def read_all(fd: int, into: list) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return
        if not chunk:
            return
        into.append(chunk)


def test_send_mail_shows_a_bar_when_stderr_is_a_terminal(settings):
    settings.MAILER_COMMIT_BATCH_SIZE = 2
    for n in range(5):
        queue(f"m{n}")
    queue("deferred", priority=PRIORITY_DEFERRED)  # not counted in the total
    master, slave = os.openpty()
    chunks = []
    reader = threading.Thread(target=read_all, args=(master, chunks))
    reader.start()
    try:
        with os.fdopen(slave, "w") as terminal:
            call_command("send_mail", stderr=terminal)
    finally:
        reader.join(timeout=10)
        os.close(master)
    raw = b"".join(chunks).decode()
    assert "\rsent 1/5 [" in raw
    assert visible_lines(raw) == ["sent 5/5 [==============================] 100%", ""]
    assert len(mail.outbox) == 5


# --- retry_deferred ---------------------------------------------------------------------------------


def test_retry_deferred_summary(caplog):
    for n in range(3):
        queue(f"d{n}", priority=PRIORITY_DEFERRED, retry_count=n)
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("retry_deferred")
    [line] = mailer_lines(caplog)
    assert re.match(rf"^3 message\(s\) retried, 0 left deferred \(MAILER_EMAIL_MAX_RETRIES\) in {SECONDS}$", line)


def test_retry_deferred_summary_counts_what_max_retries_keeps(settings, caplog):
    settings.MAILER_EMAIL_MAX_RETRIES = 2
    for n in range(5):
        queue(f"d{n}", priority=PRIORITY_DEFERRED, retry_count=n)
    queue("waiting", priority=PRIORITY_MEDIUM, retry_count=7)  # not deferred: not counted
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("retry_deferred")
    [line] = mailer_lines(caplog)
    assert line.startswith("2 message(s) retried, 3 left deferred (MAILER_EMAIL_MAX_RETRIES) in ")


# --- purge_mail_log ---------------------------------------------------------------------------------


@pytest.fixture
def old_logs():
    """Old entries (10 days): 3 successes, 2 don't send, 1 failure; and one recent entry of each."""
    now = timezone.now()
    for result, old in ((RESULT_SUCCESS, 3), (RESULT_DONT_SEND, 2), (RESULT_FAILURE, 1)):
        for days in [10] * old + [1]:
            MessageLog.objects.create(
                message_data=None,
                when_added=now - timezone.timedelta(days=days + 1),
                priority=PRIORITY_MEDIUM,
                when_attempted=now - timezone.timedelta(days=days),
                result=result,
                log_message="",
            )


@pytest.mark.parametrize(
    "args, counts",
    [
        ([], "3 log entries deleted (success 3)"),
        (["-r", "failure"], "1 log entries deleted (failure 1)"),
        (["--result", "all"], "6 log entries deleted (success 3, don't send 2, failure 1)"),
    ],
)
def test_purge_mail_log_summary(old_logs, caplog, args, counts):
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("purge_mail_log", "7", *args)
    [line] = mailer_lines(caplog)
    assert re.match(rf"^{re.escape(counts)} older than 7 day\(s\) in {SECONDS}$", line)


# --- runmailer: totals on exit, in process ----------------------------------------------------------


LOOP_DB = pytest.mark.django_db(transaction=True)  # send_loop() closes the connection a test's transaction holds
STOPPED = re.compile(
    rf"^Stopped: (\d+) pass(?:es)?, sent (\d+), deferred (\d+), skipped (\d+), failed (\d+) in {SECONDS}$"
)


def signal_when(condition, signum=signal.SIGTERM, timeout=20):
    """Send ``signum`` to this process (handled in the main thread) once ``condition()`` holds."""

    def watch():
        try:
            wait_until(condition, timeout, interval=0.02)
        except AssertionError:
            pass  # stop the command anyway: the test's own assertions then say what is missing
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@LOOP_DB
def test_runmailer_logs_the_totals_of_the_run_and_restores_the_signal_handlers(settings, caplog):
    settings.MAILER_EMPTY_QUEUE_SLEEP = 0.05
    for n in range(3):
        queue(f"m{n}")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal_when(lambda: len(mail.outbox) == 3)
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("runmailer", stdout=out)
    assert "Stopped." in out.getvalue()
    [line] = summaries(caplog, "Stopped:")
    assert STOPPED.match(line).groups() == ("1", "3", "0", "0", "0")
    assert [r.name for r in caplog.records if r.getMessage() == line] == ["mailer.management.commands.runmailer"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@LOOP_DB
def test_runmailer_totals_even_when_the_engine_logger_is_quieter(settings, caplog):
    settings.MAILER_EMPTY_QUEUE_SLEEP = 0.05
    queue("m0")
    queue("m1")
    engine_logger = logging.getLogger("mailer.engine")
    engine_logger.setLevel(logging.WARNING)
    try:
        signal_when(lambda: len(mail.outbox) == 2, signum=signal.SIGINT)
        with caplog.at_level(logging.INFO, logger="mailer"):
            call_command("runmailer", stdout=io.StringIO())
    finally:
        engine_logger.setLevel(logging.NOTSET)
    [line] = summaries(caplog, "Stopped:")
    assert STOPPED.match(line).groups()[1:] == ("2", "0", "0", "0")
    assert not [r for r in caplog.records if r.name == "mailer.engine" and r.levelno < logging.WARNING]


@LOOP_DB
def test_send_loop_hands_each_pass_to_on_pass(settings):
    settings.MAILER_EMPTY_QUEUE_SLEEP = 0.01
    stop = threading.Event()
    passes = []
    queue("a")
    queue("b")

    def on_pass(result):
        passes.append(result.sent)
        stop.set()

    send_loop(stop=stop, on_pass=on_pass)
    assert passes == [2]


def test_run_totals_wording():
    clock = Clock()
    totals = RunTotals(clock=clock)
    assert str(totals) == "0 passes, sent 0, deferred 0, skipped 0, failed 0 in 0.00s"
    totals.add(SendResult(sent=2, deferred=1, skipped=3, failed=4, seconds=9))
    clock.now += 61.5
    assert str(totals) == "1 pass, sent 2, deferred 1, skipped 3, failed 4 in 61.50s"


# --- In child processes, through tests/project/settings.py's LOGGING ------------------------------------


@pytest.fixture
def project(tmp_path):
    """A migrated database of the vendor under test, the dummy backend: the env for ``manage``."""
    with migrated_project(tmp_path, "mailer_summary") as env:
        yield env


def logged(stderr, logger):
    prefix = f"INFO {logger}: "
    return [line[len(prefix) :] for line in stderr.splitlines() if line.startswith(prefix)]


def test_send_mail_summary_on_stderr_and_no_bar_through_a_pipe(project):
    send_mail_in_project(project, 2)
    done = manage("send_mail", env=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [line] = [m for m in logged(done.stderr, "mailer.engine") if m.startswith("Sent:")]
    assert SEND_SUMMARY.match(line).groups() == ("2", "0", "0", "0")
    assert "\r" not in done.stderr and "[=" not in done.stderr


def run_on_a_terminal(args, env):
    """Run a management command with stderr on a pseudo-terminal; (exit code, stdout, what stderr got)."""
    master, slave = os.openpty()
    chunks = []
    try:
        proc = popen_manage(*args, env=env, stderr=slave)
        os.close(slave)
        slave = None
        reader = threading.Thread(target=read_all, args=(master, chunks))
        reader.start()
        out, _ = proc.communicate(timeout=120)
        reader.join(timeout=10)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return proc.returncode, out, b"".join(chunks).decode()


def test_send_mail_bar_on_a_terminal_stays_below_the_log_lines(project):
    send_mail_in_project(project, 4)
    code, out, raw = run_on_a_terminal(["send_mail"], project)
    assert code == 0, raw
    assert out == ""
    assert "\rsent 1/4 [" in raw
    lines = visible_lines(raw)
    # Every log line starts on a line of its own, the bar wiped from under it; the bar ends the output.
    sent = [line for line in lines if line.startswith("INFO mailer.engine: sending message")]
    expected = [f"INFO mailer.engine: sending message 'm{n}' to to@example.com" for n in range(4)]
    assert sent and all(line in expected for line in sent), lines
    assert sent == sorted(sent)
    assert [line for line in lines if line.startswith("INFO")] == [line for line in lines if "INFO" in line]
    assert any(SEND_SUMMARY.match(line.removeprefix("INFO mailer.engine: ")) for line in lines)
    assert lines[-2:] == ["sent 4/4 [==============================] 100%", ""]


def test_send_mail_bar_on_a_quiet_terminal(project):
    send_mail_in_project(project, 3)
    code, _, raw = run_on_a_terminal(["send_mail"], {**project, "MAILER_TEST_LOG_LEVEL": "WARNING"})
    assert code == 0, raw
    assert raw.startswith("\rsent 1/3 [=========>                    ]  33%")
    assert raw.endswith("\rsent 3/3 [==============================] 100%\r\n")


def test_send_mail_lock_held_summary_in_a_child_process(project):
    send_mail_in_project(project, 1)
    with lock_held_elsewhere(project["MAILER_TEST_LOCK_PATH"]):
        done = manage("send_mail", env=project)
    assert done.returncode == 0, done.stderr
    [line] = [m for m in logged(done.stderr, "mailer.management.commands.send_mail") if m.startswith("Sent:")]
    assert line.startswith("Sent: nothing in ") and line.endswith(
        f", another run holds the lock {project['MAILER_TEST_LOCK_PATH']}.lock"
    )
    assert "ERROR mailer.locking: lock already in place. quitting." in done.stderr
    assert not [m for m in logged(done.stderr, "mailer.engine") if m.startswith("Sent:")]


def test_retry_deferred_and_purge_mail_log_summaries_in_child_processes(project):
    send_mail_in_project(project, 2)
    run_in_project(
        project,
        "from mailer.models import Message\nMessage.objects.update(priority=4)"
        + "\nfrom mailer.models import MessageLog\nfrom django.utils import timezone\nimport datetime"
        + "\nold = timezone.now() - datetime.timedelta(days=30)"
        + "\nfor r in '1123': MessageLog.objects.create(when_added=old, priority=2, when_attempted=old, result=r)",
    )
    done = manage("retry_deferred", env=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [line] = logged(done.stderr, "mailer.management.commands.retry_deferred")
    assert re.match(rf"^2 message\(s\) retried, 0 left deferred \(MAILER_EMAIL_MAX_RETRIES\) in {SECONDS}$", line)

    done = manage("purge_mail_log", "7", "-r", "all", env=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [line] = logged(done.stderr, "mailer.management.commands.purge_mail_log")
    assert re.match(
        rf"^4 log entries deleted \(success 2, don't send 1, failure 1\) older than 7 day\(s\) in {SECONDS}$", line
    )


def test_runmailer_totals_on_stderr_when_it_stops(project):
    send_mail_in_project(project, 2)
    with running_command("runmailer", env={**project, "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.2"}) as proc:
        assert "Starting" in proc.stdout.readline() + proc.stdout.readline()
        wait_until(lambda: table_counts(project)["queued"] == 0, 60, interval=0.2, message="runmailer sent nothing")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Stopped." in out
    [line] = logged(err, "mailer.management.commands.runmailer")
    assert STOPPED.match(line).groups()[1:] == ("2", "0", "0", "0")


@pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="runmailer_pg needs PostgreSQL (MAILER_TEST_DB=postgres)")
def test_runmailer_pg_totals_on_stderr_when_it_stops(project, tmp_path):
    env = {**project, "MAILER_TEST_EMPTY_QUEUE_SLEEP": "30"}
    child = SenderProcess("runmailer_pg", env, tmp_path / "runmailer_pg.log")
    try:
        child.wait_for_log("listening for new mail", timeout=60)
        # The catch-up pass once listening finds nothing: its "Sent:" line is DEBUG only (issue 17).
        send_mail_in_project(project, 3)
        child.wait_for_log("Sent: sent 3", timeout=60)
        status = child.stop(signal.SIGTERM, timeout=30)
    finally:
        child.kill()
    err = child.log()
    assert status == 0, err
    [line] = logged(err, "mailer.management.commands.runmailer_pg")
    passes, *counts = STOPPED.match(line).groups()
    assert int(passes) >= 1
    assert counts == ["3", "0", "0", "0"]
    assert "Sent: sent 0" not in err  # the idle passes are counted, not logged
