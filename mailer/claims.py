"""Claim a batch of queued messages for one sender: the database-specific part of sending.

Call :func:`claim` inside ``transaction.atomic(using=...)``. The rows it
returns stay claimed until that transaction ends, so no other sender gets
them meanwhile:

* PostgreSQL, MySQL 8 and MariaDB 10.6+ lock the rows with
  ``SELECT ... FOR UPDATE SKIP LOCKED``: concurrent senders each take the
  next rows nobody holds, and share the queue.
* SQLite has no row locks. The claim starts with a write, which takes the
  database's write lock at once: a second sender waits (SQLite's busy
  timeout) instead of reading rows the first one is sending.
* Other databases lock the rows with a plain ``SELECT ... FOR UPDATE``: safe,
  but concurrent senders take turns.

:func:`remove` deletes the rows a sender is done with, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection

from django.db import connections
from django.db.models import QuerySet

from mailer.models import PRIORITY_DEFERRED, QUEUE_INDEX, Message


def in_send_order(queryset: QuerySet | None = None) -> QuerySet:
    """Non-deferred messages (of ``queryset``, or all) by priority, oldest first."""
    if queryset is None:
        queryset = Message.objects.all()
    return queryset.exclude(priority=PRIORITY_DEFERRED).order_by("priority", "when_added", "id")


def claim(queryset: QuerySet | None, limit: int, using: str, exclude: Collection[int] = ()) -> list[Message]:
    """Claim up to ``limit`` messages in send order, for the current transaction."""
    queryset = in_send_order(queryset).using(using)
    if exclude:
        queryset = queryset.exclude(pk__in=exclude)
    connection = connections[using]
    if connection.vendor == "mysql" and connection.features.has_select_for_update_skip_locked:
        return _claim_with_queue_index(queryset.select_for_update(skip_locked=True)[:limit], using)
    if connection.features.has_select_for_update_skip_locked:
        queryset = queryset.select_for_update(skip_locked=True)
    elif connection.vendor == "sqlite":
        _take_sqlite_write_lock(connection)
    elif connection.features.has_select_for_update:
        queryset = queryset.select_for_update()
    return list(queryset[:limit])


def _claim_with_queue_index(queryset: QuerySet, using: str) -> list[Message]:
    """MySQL/MariaDB: run the claim through the queue index, named in an index hint.

    InnoDB locks every row a locking read examines, not only those it
    returns. When the optimizer scans and sorts the table instead of reading
    the index in order (likely on a queue, whose statistics are stale as
    often as not), the first sender locks every queued row and ``SKIP
    LOCKED`` leaves the others nothing to do.
    """
    connection = connections[using]
    sql, params = queryset.query.get_compiler(using).as_sql()
    table = connection.ops.quote_name(Message._meta.db_table)
    index = connection.ops.quote_name(QUEUE_INDEX)
    hinted = sql.replace(f"FROM {table}", f"FROM {table} FORCE INDEX ({index})", 1)
    if hinted == sql:  # not the SQL expected: the plain claim is still correct
        return list(queryset)
    return list(Message.objects.using(using).raw(hinted, params))


def remove(ids: Collection[int], using: str) -> None:
    """Delete the claimed messages ``ids`` from the queue."""
    if not ids:
        return
    connection = connections[using]
    if connection.vendor == "mysql":
        # One primary-key lookup per row. InnoDB runs ``id IN (...)`` over
        # neighbouring ids as a range and locks the row after its end, which
        # another sender may hold: two senders then deadlock.
        table = connection.ops.quote_name(Message._meta.db_table)
        with connection.cursor() as cursor:
            cursor.executemany(f"DELETE FROM {table} WHERE id = %s", [(pk,) for pk in ids])
    else:
        Message.objects.using(using).filter(pk__in=ids).delete()


def _take_sqlite_write_lock(connection) -> None:
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET priority = priority WHERE 1 = 0")
