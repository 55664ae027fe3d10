"""Holding the ``lockfile`` lock from another process, as a second sender would."""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

HOLDER = """
import sys, time, lockfile
lock = lockfile.FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
hold = float(sys.argv[2])
if hold >= 0:
    time.sleep(hold)  # the scenario: another sender holds the lock for that long, then lets go
else:
    sys.stdin.read()
lock.release()
print("released", flush=True)
"""


@contextmanager
def lock_held_elsewhere(path: str, hold: float = -1.0) -> Iterator[subprocess.Popen]:
    """Another process holds the ``lockfile`` lock on ``path`` (for ``hold`` seconds, or until the block ends)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path, str(hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
