"""Every write of many queue or log rows: bulk inserts, deletes, and recording what a sending batch did.

Queueing (:mod:`mailer.enqueue`) inserts queue and log rows with :func:`insert`;
a sender records the outcome of its claimed batch with :func:`record`, which
deletes the sent rows (:func:`remove`) and inserts their log rows.

Recording cannot undo a delivery. The outcome of a batch is written in bulk, the
fast way, inside a savepoint of the claim's transaction. Should that fail (a value the log table cannot hold: a NUL on
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
from collections.abc import Collection, Sequence
from contextlib import nullcontext

from django.db import connections, models, router, transaction

from mailer.addresses import address_key
from mailer.models import DontSendEntry, LogRecipient, Message, MessageLog
from mailer.searchcols import addresses

logger = logging.getLogger(__name__)


def record(
    logs: Sequence[dict],
    log_pks: Sequence[int | None],
    done: Sequence[int],
    using: str,
    updates: Sequence[tuple[int, dict]] = (),
    block: Sequence[str] = (),
) -> None:
    """Insert the log rows ``logs`` (each for the queued message ``log_pks[i]``) and delete the rows ``done``.

    Also change the rows of ``updates`` (``(pk, fields)``: messages that stay
    queued for another attempt) and add the addresses ``block`` to the
    don't-send list. Those are few (failures), written one statement each,
    before the bulk writes, each in its own savepoint: one that fails is
    logged and leaves the message as it was claimed.
    """
    for pk, fields in updates:
        try:
            with transaction.atomic(using=using):
                Message.objects.using(using).filter(pk=pk).update(**fields)
        except Exception:
            logger.exception("message %s: its next attempt could not be recorded", pk)
    if block:
        _block(block)
    if not logs and not done:
        return
    try:
        with transaction.atomic(using=using):
            insert_logs(logs, using)
            remove(done, using)
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
        for name in ("log_message", "provider_message_id", "mailer", "recipients", "subject_text", "recipient"):
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
                remove([pk], using)
        except Exception as exc:
            _defer(pk, using)
            logger.error("message %s could not be removed from the queue (%s): deferred instead", pk, exc)


def _block(addresses: Sequence[str]) -> None:
    """Put ``addresses`` on the don't-send list, once each."""
    using = router.db_for_write(DontSendEntry)  # the list may live in another database than the queue
    try:
        with transaction.atomic(using=using):
            keys = {address_key(address) for address in addresses} - {""}
            # db_manager(), not using(): keys_on_list() and bulk_create() are the manager's (which also tells
            # queueing that the list is no longer empty); a QuerySet has the first not, and the second bare.
            entries = DontSendEntry.objects.db_manager(using)
            added = sorted(keys - entries.keys_on_list(keys))
            entries.bulk_create([DontSendEntry(to_address=key) for key in added])
    except Exception:
        logger.exception("could not add %s to the don't-send list", ", ".join(addresses))
    else:
        if added:
            logger.warning(
                "added to the don't-send list (the relay said the mailbox does not exist): %s", ", ".join(added)
            )


def _insert_one(row: dict, using: str) -> str | None:
    """Insert one log row in a savepoint; why it failed, or None."""
    try:
        with transaction.atomic(using=using):
            insert_logs([row], using)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _defer(pk: int, using: str) -> None:
    """Defer the message ``pk`` in a savepoint of its own (a failure leaves the claim's transaction usable)."""
    with transaction.atomic(using=using):
        Message.objects.using(using).filter(pk=pk).mark_deferred()


def _ascii(text: str | None) -> str | None:
    if text is None:
        return None
    return str(text).replace("\x00", "").encode("ascii", "backslashreplace").decode("ascii")


def insert_logs(rows: Sequence[dict], using: str) -> None:
    """Insert the :class:`~mailer.models.MessageLog` rows ``rows`` (from :func:`~mailer.logrows.log_fields`) and,
    for mail to more than one address, the :class:`~mailer.recipients.LogRecipient` rows of the others.

    The log rows' ids are needed for those: :func:`_insert_with_ids` gets them without giving up the bulk
    insert (a batch of mail to one address each needs none). Call it in a transaction, so that the two are
    written together.
    """
    if not rows:
        return
    if not any(" " in (row.get("recipients") or "") for row in rows):  # one address each (or none): no links
        insert(MessageLog, rows, using)
        return
    others = [addresses(row.get("recipients"))[1:] for row in rows]  # the first is the row's own column
    ids = _insert_with_ids(MessageLog, rows, using)
    links = [{"log_id": pk, "address": address} for pk, each in zip(ids, others, strict=True) for address in each]
    insert(LogRecipient, links, using)


def _insert_with_ids(model: type[models.Model], rows: Sequence[dict], using: str) -> list[int]:
    """:func:`insert` ``rows``; the ids they got, in order.

    PostgreSQL: the ids are taken from the table's sequence first (one query), and inserted with the rows.
    SQLite: the rows of one transaction get consecutive ids (one writer at a time), the last of which the
    connection tells. MariaDB 10.5+ returns them from its multi-row ``INSERT``; MySQL gets a row at a time.
    """
    connection = connections[using]
    table = model._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [connection.ops.quote_name(table), model._meta.pk.column, len(rows)],
            )
            ids = [pk for (pk,) in cursor.fetchall()]
        insert(model, [{**row, model._meta.pk.attname: pk} for pk, row in zip(ids, rows, strict=True)], using)
        return ids
    if connection.vendor == "sqlite":
        # Consecutive in a transaction: no other connection writes until it commits.
        with nullcontext() if connection.in_atomic_block else transaction.atomic(using=using):
            insert(model, rows, using)
            with connection.cursor() as cursor:
                cursor.execute("SELECT last_insert_rowid()")
                [(last,)] = cursor.fetchall()
        return list(range(last - len(rows) + 1, last + 1))
    objs = [model(**row) for row in rows]
    if connection.features.can_return_rows_from_bulk_insert:
        model._default_manager.using(using).bulk_create(objs)
    else:
        for obj in objs:
            obj.save(using=using, force_insert=True)
    return [obj.pk for obj in objs]


# Fields whose Python values the drivers take as they are: no per-row preparation needed.
_PLAIN_FIELDS = (models.TextField, models.CharField, models.IntegerField, models.ForeignKey)


def insert(model: type[models.Model], rows: Sequence[dict], using: str, batch_size: int | None = None) -> None:
    """Insert ``rows`` (dicts of field values by attribute name) into ``model``'s table, in few statements.

    Like ``bulk_create`` without building a model instance and a piece of SQL
    for each row and field, which is most of the time of queueing a batch:
    PostgreSQL with psycopg 3 takes the rows with ``COPY``; SQLite and
    MySQL/MariaDB with one ``executemany()`` (the sqlite3 module loops in C,
    mysqlclient sends multi-row ``INSERT``); other databases and drivers
    (psycopg2) get ``bulk_create``. A single row is one plain ``INSERT``. A
    field missing from a row takes its default, read once per call; the primary key, its next value. Only
    text, integer and date-time fields are supported; a date-time is prepared
    for the database once per distinct value. ``batch_size`` rows at most go
    into one statement. No signal is sent, as with ``bulk_create``.
    """
    if not rows:
        return
    connection = connections[using]
    pk = model._meta.pk.attname
    fields = [field for field in model._meta.concrete_fields if not field.primary_key or pk in rows[0]]
    defaults = {field.attname: field.get_default() for field in fields if field.attname not in rows[0]}
    with connection.cursor() as cursor:
        copy = getattr(cursor.cursor, "copy", None) if connection.vendor == "postgresql" else None
        if copy is None and connection.vendor not in ("sqlite", "mysql"):
            objs = [model(**{**defaults, **row}) for row in rows]
            model._default_manager.using(using).bulk_create(objs, batch_size=batch_size)
            return
        values = _values(rows, fields, defaults, connection)
        table = connection.ops.quote_name(model._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
        insert_sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
        size = batch_size or len(values)
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            if len(chunk) == 1:
                cursor.execute(insert_sql, chunk[0])  # one round trip, where COPY takes two
            elif copy is not None:
                _copy(cursor, copy, f"COPY {table} ({columns}) FROM STDIN", chunk)
            else:
                cursor.executemany(insert_sql, chunk)


def _values(rows: Sequence[dict], fields: list[models.Field], defaults: dict, connection) -> list[tuple]:
    """The rows as tuples of database values, in the order of ``fields``."""
    for field in fields:
        if not isinstance(field, (*_PLAIN_FIELDS, models.DateTimeField)):
            raise TypeError(f"insert() cannot write {field.__class__.__name__} {field.name!r}")
    names = [field.attname for field in fields]
    dates = [(i, field) for i, field in enumerate(fields) if isinstance(field, models.DateTimeField)]
    prepared: dict = {}  # (column, value) -> database value: rows of a batch share their timestamps
    values = []
    for row in rows:
        row = {**defaults, **row} if defaults else row
        value = [row[name] for name in names]
        for i, field in dates:
            key = (i, value[i])  # not the field: a Field's hash is a Python call
            if key not in prepared:
                prepared[key] = field.get_db_prep_save(value[i], connection)
            value[i] = prepared[key]
        values.append(tuple(value))
    return values


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


_DELETE_CHUNK = 500  # ids per DELETE: well below every database's limit on query parameters


def remove(ids: Collection[int], using: str) -> None:
    """Delete the claimed messages ``ids`` from the queue."""
    if not ids:
        return
    connection = connections[using]
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            # One primary-key lookup per row. InnoDB runs ``id IN (...)`` over
            # neighbouring ids as a range and locks the row after its end, which
            # another sender may hold: two senders then deadlock.
            cursor.executemany(f"DELETE FROM {table} WHERE id = %s", [(pk,) for pk in ids])
            return
        # Plain SQL: the ORM's delete() would first look for signal receivers and related rows, of which
        # the queue has none.
        ids = list(ids)
        for start in range(0, len(ids), _DELETE_CHUNK):
            chunk = ids[start : start + _DELETE_CHUNK]
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)
