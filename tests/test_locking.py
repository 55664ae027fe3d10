"""The file lock heals when its owner died, and is respected while its owner lives."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import lockfile
import pytest

from mailer import locking
from mailer.engine import acquire_lock, release_lock, send_all
from tests.support.procs import manage, running_command
from tests.support.queueing import queue
from tests.support.sqlite_project import child_env, query, queue_in
from tests.support.waiting import wait_until


def test_a_sender_killed_with_sigkill_does_not_stop_the_next_one(sqlite_project, smtp_server, caplog):
    """A real send_mail holding the lock is SIGKILLed; the next run breaks the lock and sends."""
    for n in range(3):
        queue_in(sqlite_project, f"message {n}")
    # One message per pass of the throttle: the sender holds the lock while it sleeps.
    env = {**child_env(sqlite_project), "MAILER_TEST_SETTINGS": json.dumps({"MAILER_EMAIL_THROTTLE": 60})}
    with running_command("send_mail", env=env) as first:
        # Wait for the commit, not only the delivery: this test is about the lock, not about the
        # (documented) resend of a message whose sender dies between delivery and commit.
        wait_until(lambda: query(sqlite_project, "SELECT COUNT(*) FROM mailer_message") == [(2,)])
        lock_file = sqlite_project["MAILER_TEST_LOCK_PATH"] + ".lock"
        assert os.path.exists(lock_file)
        lock_dir = os.path.dirname(lock_file)
        owner_files = [name for name in os.listdir(lock_dir) if f".{first.pid}" in name]
        assert len(owner_files) == 1  # lockfile's own file of the holder, hard-linked to the lock
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)

    second = manage("send_mail", env=child_env(sqlite_project), timeout=60)
    err = second.stderr
    assert second.returncode == 0, err
    assert "breaking stale lock" in err
    assert f"process {first.pid}" in err
    smtp_server.wait_for(3)
    assert sorted(m.message["Subject"] for m in smtp_server.messages) == [f"message {n}" for n in range(3)]
    assert query(sqlite_project, "SELECT COUNT(*) FROM mailer_message") == [(0,)]
    assert not os.path.exists(lock_file)
    assert not os.path.exists(os.path.join(lock_dir, owner_files[0]))  # nothing of the dead owner left


@pytest.fixture
def live_holder(lock_path):
    """Another live process holding the lock, the way a running sender does."""
    code = (
        "import sys, time; from mailer import locking; import django; from django.conf import settings; "
        f"settings.configure(MAILER_LOCK_PATH={lock_path!r}); "
        "ok, lock = locking.acquire_lock(); print(ok, flush=True); time.sleep(60)"
    )  # it holds the lock until the fixture kills it (the 60 s are only a bound)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "True"
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_owner_is_respected(live_holder, caplog):
    acquired, _lock = acquire_lock()
    assert not acquired
    assert "lock already in place" in caplog.text
    assert "stale" not in caplog.text


def test_a_lock_from_before_the_last_boot_is_broken(lock_path, caplog):
    lock_file = lock_path + ".lock"
    with open(lock_file, "w") as f:
        f.write(f"{socket.gethostname()} 1 0\n")  # pid 1 is alive, but this lock predates the boot
    os.utime(lock_file, (0, 0))
    acquired, lock = acquire_lock()
    assert acquired
    assert "before this machine last booted" in caplog.text
    release_lock(lock)


def test_a_lock_taken_again_while_its_dead_owner_was_checked_is_left_alone(lock_path, monkeypatch, caplog):
    lock_file = lock_path + ".lock"
    with open(lock_file, "w") as f:
        f.write(f"{socket.gethostname()} 999999999 0\n")  # a pid no process can have
    owner_is_gone = locking._owner_is_gone

    def another_run_breaks_and_takes_it_meanwhile(path):
        reason = owner_is_gone(path)
        os.unlink(path)
        with open(path, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()} {locking._process_start(os.getpid())}\n")
        return reason

    monkeypatch.setattr(locking, "_owner_is_gone", another_run_breaks_and_takes_it_meanwhile)
    locking._break_if_stale(lock_file)
    assert os.path.exists(lock_file)
    assert "breaking stale lock" not in caplog.text


def test_an_unknown_owner_from_another_host_is_respected(lock_path):
    # Taken in another thread: lockfile lets one thread take its own lock again.
    taken = []

    def take():
        lock = lockfile.FileLock(lock_path)
        lock.acquire(-1)
        taken.append(lock)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    held = taken[0]
    with open(held.lock_file, "w") as f:
        f.write("some-other-host 12345 1\n")
    os.utime(held.lock_file, (0, 0))  # even one older than this machine's boot: that host may still run
    try:
        acquired, _lock = acquire_lock()
        assert not acquired
    finally:
        held.release()


def test_the_lock_records_its_owner(lock_path):
    acquired, lock = acquire_lock()
    try:
        with open(lock.lock_file) as f:
            host, pid, _start = f.read().split()
        assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    finally:
        release_lock(lock)


# --- A test suite's stand-in for lockfile.FileLock, as 2.x users' suites have (issue 16) ------------------


class StandInLock:
    """Only what django-mailer 2.x asked of a lock: built from a path, ``acquire(timeout)``, ``release()``."""

    made: list = []

    def __init__(self, path, raises=None):
        self.path, self.raises, self.calls = path, raises, []
        StandInLock.made.append(self)

    def acquire(self, timeout=None):
        self.calls.append(("acquire", timeout))
        if self.raises is not None:
            raise self.raises

    def release(self):
        self.calls.append(("release",))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raises", "logged"),
    [
        (lockfile.AlreadyLocked, "lock already in place. quitting."),
        (lockfile.LockTimeout, "waiting for the lock timed out. quitting."),
        (None, None),
    ],
)
def test_a_stand_in_lock_decides_as_it_did_with_2_x(settings, tmp_path, monkeypatch, caplog, raises, logged):
    settings.MAILER_LOCK_PATH = str(tmp_path / "send_mail")
    settings.MAILER_LOCK_WAIT_TIMEOUT = 5
    StandInLock.made = []
    monkeypatch.setattr(lockfile, "FileLock", lambda path: StandInLock(path, raises and raises("held")))
    queue("one")

    result = send_all()

    [lock] = StandInLock.made
    assert lock.path == settings.MAILER_LOCK_PATH
    if raises is None:
        assert result.sent == 1 and lock.calls == [("acquire", 5), ("release",)]
    else:
        assert result is None and lock.calls == [("acquire", 5)]  # the queue was not touched
        assert logged in caplog.text
    assert list(tmp_path.iterdir()) == []  # no lock file of our own next to a stand-in
