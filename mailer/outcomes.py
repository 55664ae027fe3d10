"""Writing what a sending batch did: log rows in, sent rows out, in a way that cannot undo a delivery.

The outcome of a batch is written in bulk, the fast way, inside a savepoint of the
claim's transaction. Should that fail (a value the log table cannot hold: a NUL on
PostgreSQL, a four-byte character in a ``utf8mb3`` table, a type the driver
refuses...), rolling back the whole transaction would put mail the relay already
accepted back on the queue, to be sent again at every run. Instead the savepoint
is rolled back and the rows are written one by one, each in a savepoint of its own:

1. the row as it is;
2. failing that, the row without its Message-ID and message data, its text made
   ASCII, and the reason added to its log message;
3. failing that too, the message is not deleted but deferred, and the reason
   logged at the ERROR level: it waits for ``retry_deferred`` instead of being
   sent again at the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import transaction

from mailer import claims
from mailer.models import PRIORITY_DEFERRED, Message, MessageLog

logger = logging.getLogger(__name__)


def write(logs: Sequence[dict], log_pks: Sequence[int | None], done: Sequence[int], using: str) -> None:
    """Insert the log rows ``logs`` (each for the queued message ``log_pks[i]``) and delete the rows ``done``."""
    if not logs and not done:
        return
    try:
        with transaction.atomic(using=using):
            claims.insert(MessageLog, logs, using)
            claims.remove(done, using)
        return
    except Exception:
        logger.warning(
            "writing the outcome of %d message(s) at once failed; writing them one at a time",
            len(logs) or len(done),
            exc_info=True,
        )
    to_remove = dict.fromkeys(done)
    for pk, row in zip(log_pks, logs, strict=True):
        reason = _insert_one(row, using)
        if reason is None:
            continue
        stripped = {**row, "message_id": None, "message_data": None}
        for name in ("log_message", "provider_message_id", "mailer"):
            stripped[name] = _ascii(stripped[name])
        note = f"[django-mailer: this entry's Message-ID and message data could not be logged: {_ascii(reason)}]"
        stripped["log_message"] = f"{stripped['log_message']}\n{note}".strip()
        second = _insert_one(stripped, using)
        if second is None:
            logger.warning("message %s logged without its Message-ID and data: %s", pk, reason)
            continue
        deferred = pk is not None and pk in to_remove
        if deferred:
            del to_remove[pk]
            _defer(pk, using)
        logger.error(
            "message %s: its outcome (result %s) could not be logged, even without its Message-ID and data (%s)%s",
            pk,
            row.get("result"),
            second,
            "; deferred rather than deleted, so that it is not sent again at the next run" if deferred else "",
        )
    for pk in to_remove:
        try:
            with transaction.atomic(using=using):
                claims.remove([pk], using)
        except Exception as exc:
            _defer(pk, using)
            logger.error("message %s could not be removed from the queue (%s): deferred instead", pk, exc)


def _insert_one(row: dict, using: str) -> str | None:
    """Insert one log row in a savepoint; why it failed, or None."""
    try:
        with transaction.atomic(using=using):
            claims.insert(MessageLog, [row], using)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _defer(pk: int, using: str) -> None:
    with transaction.atomic(using=using):
        Message.objects.using(using).filter(pk=pk).update(priority=PRIORITY_DEFERRED)


def _ascii(text: str | None) -> str | None:
    if text is None:
        return None
    return str(text).replace("\x00", "").encode("ascii", "backslashreplace").decode("ascii")
