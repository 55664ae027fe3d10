"""The database-specific SQL of the queue: claiming messages for a sender, writing rows in bulk.

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

:func:`insert` writes many queue or log rows at once, the fastest way each
database has (``COPY`` on PostgreSQL with psycopg 3).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from django.db import connections, models
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


# Fields whose Python values the drivers take as they are: no per-row preparation needed.
_PLAIN_FIELDS = (models.TextField, models.CharField, models.IntegerField)


def insert(objs: Sequence[models.Model], using: str, batch_size: int | None = None) -> None:
    """Insert the unsaved ``objs`` (all of one model) in as few statements as the database allows.

    Like ``bulk_create`` without its per-row, per-field query building, the
    larger part of queueing a batch: PostgreSQL with psycopg 3 takes the rows
    with ``COPY``; SQLite and MySQL/MariaDB with one ``executemany()`` (the
    sqlite3 module loops in C, mysqlclient sends multi-row ``INSERT``); other
    databases and drivers (psycopg2) get ``bulk_create``. Primary keys are not
    set on ``objs``, and no signal is sent (as with ``bulk_create``). Only
    text, integer and date-time fields are supported; a date-time is prepared
    for the database once per distinct value. ``batch_size`` rows at most go
    into one statement.
    """
    if not objs:
        return
    model = type(objs[0])
    connection = connections[using]
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    with connection.cursor() as cursor:
        copy = getattr(cursor.cursor, "copy", None) if connection.vendor == "postgresql" else None
        if copy is None and connection.vendor not in ("sqlite", "mysql"):
            model._default_manager.using(using).bulk_create(objs, batch_size=batch_size)
            return
        rows = _rows(objs, fields, connection)
        table = connection.ops.quote_name(model._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
        size = batch_size or len(rows)
        insert_sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            if len(chunk) == 1:
                cursor.execute(insert_sql, chunk[0])  # one round trip, where COPY takes two
            elif copy is not None:
                _copy(cursor, copy, f"COPY {table} ({columns}) FROM STDIN", chunk)
            else:
                cursor.executemany(insert_sql, chunk)


def _rows(objs: Sequence[models.Model], fields: list[models.Field], connection) -> list[tuple]:
    prepared: dict = {}  # (field, value) -> value for the database: batches share their timestamps

    def prepare(field: models.Field, value):
        key = (field, value)
        if key not in prepared:
            prepared[key] = field.get_db_prep_save(value, connection)
        return prepared[key]

    getters = []
    for field in fields:
        if isinstance(field, models.DateTimeField):
            getters.append((field, True))
        elif isinstance(field, _PLAIN_FIELDS):
            getters.append((field, False))
        else:
            raise TypeError(f"insert() cannot write {field.__class__.__name__} {field.name!r}")
    return [
        tuple(
            prepare(field, getattr(obj, field.attname)) if needs_prep else getattr(obj, field.attname)
            for field, needs_prep in getters
        )
        for obj in objs
    ]


def _copy(cursor, copy, sql: str, rows: list[tuple]) -> None:
    """Run ``COPY ... FROM STDIN`` with ``rows``, logged like a query where Django logs queries."""
    debug_sql = getattr(cursor, "debug_sql", None)  # Django's CursorDebugWrapper (DEBUG, tests)
    with cursor.db.wrap_database_errors:
        if debug_sql is None:
            _write_rows(copy, sql, rows)
        else:
            with debug_sql(sql, rows, many=True):
                _write_rows(copy, sql, rows)


def _write_rows(copy, sql: str, rows: list[tuple]) -> None:
    with copy(sql) as stream:
        for row in rows:
            stream.write_row(row)
