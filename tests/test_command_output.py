"""What an operator sees from the sending commands, run as real processes against a real relay.

A project without ``LOGGING`` for django-mailer gets the commands' own lines: one warning line for a run
that deferred or failed anything (with the counts and the first error), one line per message with
``-v 2``, nothing but errors with ``-v 0``. A project whose ``LOGGING`` handles the ``mailer`` loggers
(``tests/project/settings.py`` prints INFO on stderr) sees its log lines only, never a second summary.
The exit status stays 0 when mail was deferred or failed, as with django-mailer 2.3.2 under cron.
"""

import json
import re
import threading

import pytest

from tests.support import dbconfig
from tests.support.procs import manage, running_command
from tests.support.project_db import migrated_project, run_in_project, table_counts
from tests.support.relays import GREYLISTED, NO_SUCH_USER, ScriptedRelay

NO_LOGGING = {"MAILER_TEST_SETTINGS": json.dumps({"LOGGING": {}})}

QUEUE_THREE = """
import mailer
mailer.send_mail("Invoice 12", "body", "from@example.com", ["nobody@example.com"])
mailer.send_mail("Invoice 13", "body", "from@example.com", ["later@example.com"])
mailer.send_mail("Welcome", "body", "from@example.com", ["ann@example.com"])
"""

SUMMARY = re.compile(r"^Sent: sent 1, deferred 1, skipped 0, failed 1 in \d+\.\d\ds; first error: (?P<error>.+)$")


@pytest.fixture
def refusing_relay():
    """Refuses nobody@ for good (550) and later@ for now (451); takes everyone else."""
    with ScriptedRelay(refuse={"nobody@example.com": NO_SUCH_USER, "later@example.com": GREYLISTED}) as relay:
        yield relay


def smtp_project(tmp_path, relay, prefix):
    """A migrated database whose senders deliver to ``relay``, with the file lock (SQLite wants it)."""
    return migrated_project(tmp_path, prefix, MAILER_TEST_SMTP_PORT=str(relay.port))


@pytest.fixture
def project(tmp_path, refusing_relay):
    with smtp_project(tmp_path, refusing_relay, "output") as env:
        run_in_project(env, QUEUE_THREE)
        yield env


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_without_logging_a_run_that_went_wrong_prints_one_warning_line_and_exits_0(project, refusing_relay):
    done = manage("send_mail", env={**project, **NO_LOGGING})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [line] = lines(done.stderr)
    assert SUMMARY.match(line), line
    assert "nobody@example.com: 550 5.1.1 No such user" in SUMMARY.match(line)["error"]
    assert refusing_relay.received() == ["ann@example.com"]
    assert table_counts(project)["logs"] == {"1": 1, "2": 0, "3": 2}


def test_without_logging_a_clean_run_prints_nothing(tmp_path):
    with ScriptedRelay() as relay, smtp_project(tmp_path, relay, "clean") as env:
        run_in_project(env, QUEUE_THREE)
        done = manage("send_mail", env={**env, **NO_LOGGING})
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert len(relay.received()) == 3


def test_with_logging_the_project_log_has_the_lines_and_nothing_is_printed_twice(project):
    done = manage("send_mail", env=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    err = lines(done.stderr)
    [summary] = [line for line in err if "Sent:" in line]
    assert summary.startswith("INFO mailer.engine: Sent: sent 1, deferred 1, skipped 0, failed 1 in ")
    assert not [line for line in err if "first error" in line]  # the command's own line: not with LOGGING
    assert any(line.startswith("WARNING mailer.engine: message 1: the relay refused 1") for line in err)


@pytest.mark.parametrize("logging_env", [NO_LOGGING, {}], ids=["no-logging", "logging"])
def test_verbosity_2_prints_one_line_per_message(project, logging_env):
    done = manage("send_mail", "-v", "2", env={**project, **logging_env})
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert len(out) == 3, out
    assert out[0] == 'failed   to nobody@example.com "Invoice 12": refused nobody@example.com: 550 5.1.1 No such user'
    assert out[1].startswith('deferred to later@example.com "Invoice 13": refused later@example.com: 451 4.3.0 Try')
    assert out[2] == 'sent     to ann@example.com "Welcome"'
    if logging_env is not NO_LOGGING:  # no summary of the command's own: the log has its "Sent:" line
        assert not [line for line in lines(done.stderr) if line.startswith("Sent:")]
    else:
        assert [line for line in lines(done.stderr) if line.startswith("Sent:")] == lines(done.stderr)


def test_verbosity_0_prints_nothing_but_errors(project, tmp_path):
    done = manage("send_mail", "-v", "0", env={**project, **NO_LOGGING})
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # An error still shows: another run holds the lock.
    lock = project["MAILER_TEST_LOCK_PATH"] + ".lock"
    with open(lock, "w") as f:
        f.write("")  # an empty lock, as 2.x leaves: respected
    done = manage("send_mail", "-v", "0", env={**project, **NO_LOGGING})
    assert done.returncode == 0
    assert lines(done.stderr) == ["lock already in place. quitting."]


def test_relay_down_names_the_reason(tmp_path):
    relay = ScriptedRelay().start()
    relay.stop()  # its port now refuses connections
    with smtp_project(tmp_path, relay, "down") as env:
        run_in_project(env, QUEUE_THREE)
        done = manage("send_mail", env={**env, **NO_LOGGING})
    assert done.returncode == 0
    [line] = lines(done.stderr)
    assert line.startswith("Sent: sent 0, deferred 1, skipped 0, failed 0")
    assert line.endswith("first error: ConnectionRefusedError: [Errno 111] Connection refused"), line


def test_runmailer_prints_the_warning_line_of_each_pass_that_went_wrong(project):
    with running_command("runmailer", env={**project, **NO_LOGGING}) as proc:
        watchdog = threading.Timer(60, proc.kill)  # no line coming: end of the stream, not a hung test
        watchdog.start()
        seen = []
        for line in proc.stderr:
            seen.append(line.rstrip("\n"))
            if line.startswith("Sent:"):
                break
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        watchdog.cancel()
    assert SUMMARY.match(seen[-1]), seen
    # Before it, only the system check's warning about runmailer on SQLite: no line per message.
    assert not [line for line in seen[:-1] if "refused" in line or "Sent:" in line], seen
    assert proc.returncode == 0
    assert "Starting django-mailer send loop" in out


@pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="runmailer_pg needs PostgreSQL (MAILER_TEST_DB=postgres)")
def test_an_idle_runmailer_pg_logs_no_pass_summary(tmp_path):
    env = {"MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.1", "MAILER_TEST_USE_FILE_LOCK": "0"}
    with migrated_project(tmp_path, "idle", **env) as project:
        with running_command("runmailer_pg", env=project) as proc:
            watchdog = threading.Timer(60, proc.kill)
            watchdog.start()
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "listening for new mail" in line:
                    break
            # Twenty heartbeats: each one a pass over an empty queue.
            run_in_project(project, "import time; time.sleep(2)")
            proc.terminate()
            _out, err = proc.communicate(timeout=30)
            watchdog.cancel()
    text = "".join(seen) + err
    assert "Sent:" not in text, text
    assert re.search(r"Stopped: \d\d+ passes, sent 0", text), text
