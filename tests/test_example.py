"""The README's first command: the example project's ``demo``, run as a user would, in seconds.

It must show the failure path too: the demo relay refuses one recipient for good (550) and one for now
(451), and the output shows what an operator sees of that: ``send_mail``'s warning line (the example has
no ``LOGGING``), its exit status 0, the log entries with the relay's replies, and ``mailer_status``.
"""

import os
import subprocess
import sys
import time

from tests.support.procs import REPO_ROOT

EXAMPLE = REPO_ROOT / "example"


def run(*args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_demo_shows_the_failure_path_and_exits_0(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EXAMPLE_", "MAILER_"))}
    env.update(EXAMPLE_DB=str(tmp_path / "example.sqlite3"), PYTHONPATH=str(REPO_ROOT))
    assert run("migrate", "-v0", env=env).returncode == 0
    started = time.monotonic()
    done = run("demo", env=env)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    # send_mail's one warning line, with the counts and the first error, and its exit status.
    assert "  Sent: sent 5, deferred 1, skipped 0, failed 1 in " in out
    assert "; first error: refused nobody@example.com: 550 5.1.1 No such user here\n" in out
    assert "(exit status 0:" in out
    # The log entries carry the relay's replies.
    assert "refused nobody@example.com: 550 5.1.1 No such user here" in out.split("== Log of this run")[1]
    assert "refused busy@example.com: 451 4.7.1 Greylisted" in out.split("== Log of this run")[1]
    assert "[attempt 1 of " in out
    # mailer_status: the greylisted message waits for its retry; times in UTC, not Django's default zone.
    status = out.split("== manage.py mailer_status")[1]
    assert "  waiting           1" in status
    assert "  failure           2          2" in status
    assert " UTC (" in status and "CST" not in out and "CDT" not in out
    assert seconds < 30, seconds
