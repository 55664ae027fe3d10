"""The file lock that keeps two ``send_mail`` runs on one machine apart.

The lock is a ``lockfile.FileLock`` at ``MAILER_LOCK_PATH`` (``.lock`` is
appended). Its holder writes ``host pid start-time`` into the lock file, so
that a later run can tell a lock whose owner died (SIGKILL, power loss,
reboot) from one that is held: a dead owner's lock is broken, with a
warning, instead of stopping all mail until somebody deletes the file.

What can be checked, on Linux: the owner's process on this host (is it
still running, and is it the same process and not a later one with the same
pid?), and whether a lock of this host (or an empty one, as django-mailer 2.x
leaves) predates this machine's last boot. A lock written by another host is
always respected.
"""

from __future__ import annotations

import logging
import os
import socket

import lockfile

from mailer import legacy_names

logger = logging.getLogger(__name__)


def lock_path() -> str:
    """``MAILER_LOCK_PATH``, or ``send_mail`` in the working directory (``.lock`` is appended)."""
    return legacy_names.setting("LOCK_PATH") or "send_mail"


def acquire_lock() -> tuple[bool, lockfile.FileLock]:
    """Take the lock, waiting at most ``MAILER_LOCK_WAIT_TIMEOUT`` seconds (-1: not at all).

    Asks of the lock only what django-mailer 2.x did (``lockfile.FileLock(path)``, looked up when
    called, and its ``acquire()``), so that a test suite's stand-in for it works as it did with 2.x.
    The lock file is only looked at when the lock could not be taken: if its owner is dead, the
    stale lock is broken and taken once more.
    """
    path = lock_path()
    lock = lockfile.FileLock(path)
    timeout = legacy_names.setting("LOCK_WAIT_TIMEOUT")
    lock_file = os.path.abspath(path) + ".lock"  # lockfile's own naming
    logger.debug("acquiring lock %s", lock_file)
    for last_try in (False, True):
        try:
            lock.acquire(timeout)
        except (lockfile.AlreadyLocked, lockfile.LockTimeout) as exc:
            if not last_try and _break_if_stale(lock_file):
                continue
            if isinstance(exc, lockfile.AlreadyLocked):
                logger.error("lock already in place. quitting.")
            else:
                logger.error("waiting for the lock timed out. quitting.")
            return False, lock
        break
    _write_owner(lock_file)
    logger.debug("acquired.")
    return True, lock


def release_lock(lock: lockfile.FileLock) -> None:
    logger.debug("releasing lock...")
    lock.release()
    logger.debug("released.")


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), or ``""`` where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _write_owner(lock_file: str) -> None:
    """Write the owner into the lock file ``lockfile`` created; never create one (a stand-in lock makes none)."""
    pid = os.getpid()
    try:
        with open(lock_file, "r+") as f:
            f.truncate()
            f.write(f"{socket.gethostname()} {pid} {_process_start(pid)}\n")
    except OSError:
        logger.debug("could not record the lock's owner", exc_info=True)


def _owner_is_gone(lock_file: str) -> str | None:
    """Why the lock's owner is known to be dead, or None while it may be alive."""
    try:
        with open(lock_file) as f:
            fields = f.read().split()
        stat = os.stat(lock_file)
    except OSError:
        return None
    if fields and fields[0] != socket.gethostname():
        return None  # Another host's: it may still be running there.
    boot = _boot_time()
    if boot is not None and stat.st_mtime < boot:
        return "it was taken before this machine last booted"
    if len(fields) < 2:
        return None  # Being written, or written by django-mailer 2.x.
    try:
        pid = int(fields[1])
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its owner, process {pid}, is gone"
    except PermissionError:
        pass  # Alive, under another user.
    recorded_start = fields[2] if len(fields) > 2 else ""
    if recorded_start and _process_start(pid) not in ("", recorded_start):
        return f"process {pid}, which took it, has ended (the pid now belongs to another process)"
    return None


def _identity(lock_file: str) -> tuple | None:
    """What tells this lock file from a later one at the same path (inodes are reused at once)."""
    try:
        with open(lock_file, "rb") as f:
            content = f.read()
            stat = os.fstat(f.fileno())
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_nlink, content


def _break_if_stale(lock_file: str) -> bool:
    """Delete the lock file if its owner is known to be dead; True if it did (the lock is free now)."""
    stale = _identity(lock_file)
    if stale is None:
        return False
    reason = _owner_is_gone(lock_file)
    if reason is None:
        return False
    if _identity(lock_file) != stale:
        return False  # Broken and taken again by another run meanwhile: that lock is alive.
    logger.warning("breaking stale lock %s: %s", lock_file, reason)
    try:
        os.unlink(lock_file)
    except FileNotFoundError:
        return True
    device, inode, _mtime, links, _content = stale
    if links > 1:  # Otherwise the inode is free now, and may be another file's already.
        _remove_owner_file(lock_file, device, inode)
    return True


def _remove_owner_file(lock_file: str, device: int, inode: int) -> None:
    """Delete the dead owner's own file, which ``lockfile`` hard-linked to the lock.

    ``lockfile`` takes the lock by creating a file named after the owner's
    host, thread and pid next to it and linking the lock to that file; the
    owner deletes both when it releases the lock. A dead owner leaves its
    file behind: it is the other name of the stale lock's inode.
    """
    directory = os.path.dirname(lock_file)
    prefix = socket.gethostname()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.inode() == inode:
                    if entry.stat(follow_symlinks=False).st_dev == device:
                        os.unlink(entry.path)
    except OSError:
        logger.debug("could not remove the stale lock's owner file", exc_info=True)
