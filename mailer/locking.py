"""The file lock that keeps two ``send_mail`` runs on one machine apart."""

from __future__ import annotations

import logging

import lockfile

from mailer.conf import mailer_settings

logger = logging.getLogger(__name__)


def lock_path() -> str:
    """``MAILER_LOCK_PATH``, or ``send_mail`` in the working directory (``.lock`` is appended)."""
    return mailer_settings.LOCK_PATH or "send_mail"


def acquire_lock() -> tuple[bool, lockfile.FileLock]:
    """Take the lock, waiting at most ``MAILER_LOCK_WAIT_TIMEOUT`` seconds (-1: not at all)."""
    lock = lockfile.FileLock(lock_path())
    timeout = mailer_settings.LOCK_WAIT_TIMEOUT
    logger.debug("acquiring lock %s", lock.lock_file)
    try:
        lock.acquire(timeout)
    except lockfile.AlreadyLocked:
        logger.error("lock already in place. quitting.")
        return False, lock
    except lockfile.LockTimeout:
        logger.error("waiting for the lock timed out. quitting.")
        return False, lock
    logger.debug("acquired.")
    return True, lock


def release_lock(lock: lockfile.FileLock) -> None:
    logger.debug("releasing lock...")
    lock.release()
    logger.debug("released.")
