"""The database-specific SQL of claiming: which queued messages a sender takes, locked, in send order.

Call a :class:`Claimer` inside ``transaction.atomic(using=...)``. The rows it
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

What a sender does with the rows it claimed is written by :mod:`mailer.writes`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, models, router
from django.db.models import Case, Exists, F, Func, IntegerField, Q, QuerySet, TextField, When
from django.db.models.base import DEFERRED
from django.db.models.expressions import RawSQL
from django.db.models.functions import Length
from django.utils import timezone

from mailer.durability import COMMIT_WITHOUT_WAITING_FOR_DISK
from mailer.models import PRIORITY_DEFERRED, QUEUE_INDEX, DontSendEntry, Message


def in_send_order(queryset: QuerySet | None = None) -> QuerySet:
    """Non-deferred messages (of ``queryset``, or all) by priority, oldest first."""
    if queryset is None:
        queryset = Message.objects.all()
    return queryset.exclude(priority=PRIORITY_DEFERRED).order_by("priority", "when_added", "id")


class Claimer:
    """Claims batches of messages in send order for one sending pass (of ``queryset``, or the whole queue).

    Call it inside ``transaction.atomic(using=using)`` with the most messages
    to claim. Each message it returns has ``dont_send_list_in_use``: whether
    the don't-send list had any entry at that moment (asked in the same
    query), or ``None`` when the list lives in another database. The SQL of a
    claim is built once per batch size and excluded ids, and reused: the
    ORM takes longer to build it than the database to run it.
    """

    def __init__(self, queryset: QuerySet | None, using: str) -> None:
        self.queryset = in_send_order(queryset).using(using)
        self.using = using
        self.connection = connections[using]
        self.statements: dict[tuple, tuple[str, tuple] | None] = {}
        self.reader: _Reader | None = None

    def __call__(self, limit: int, after: Position | None = None, mailers: Mailers | None = None) -> list[Message]:
        """Claim up to ``limit`` messages; only those after ``after`` in send order, if given.

        ``after`` is the ``(priority, when_added, id)`` of a message the sender
        passed over: the claim starts after it, whatever number of messages were
        passed over before, so its SQL and parameters stay the same size.
        ``mailers``: only the messages of some ``Message.mailer`` values (see :data:`Mailers`).
        """
        key = (limit, after is not None, mailers)
        if key not in self.statements:
            self.statements[key] = self.statement(limit, after is not None, mailers)
        if self.connection.vendor == "sqlite":
            _take_sqlite_write_lock(self.connection)
        statement = self.statements[key]
        now = self.connection.ops.adapt_datetimefield_value(timezone.now())
        if statement is None:  # a query the database must get from the ORM each time
            return list(self.queryset_for(limit, self.position_values(after), now, mailers))
        sql, params = statement
        values = {_NOW: now}
        if after is not None:
            values.update(zip(_SLOTS, self.position_values(after), strict=True))
        params = tuple(values.get(param, param) if isinstance(param, _Slot) else param for param in params)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
            if not rows:
                return []
            if self.reader is None:
                self.reader = _Reader(cursor.description, self.queryset, self.using)
        return self.reader.messages(rows)

    def position_values(self, after: Position | None) -> tuple | None:
        if after is None:
            return None
        priority, when_added, pk = after
        return priority, self.connection.ops.adapt_datetimefield_value(when_added), pk

    def queryset_for(self, limit: int, after: tuple | None, now: Any, mailers: Mailers | None = None) -> QuerySet:
        queryset = self.queryset.filter(_due(self.connection, now))
        if mailers is not None:
            queryset = queryset.filter(mailers_filter(mailers))
        if after is not None:
            queryset = queryset.filter(_after_position(self.connection, after))
        # A big row's data is not fetched with the claim, only its length: see read_data(). The sender
        # never reads last_error (it writes it), nor the search columns; read on access, for a handler that does.
        # not_before is read: a message whose delivery goes on across a commit gets it back (mailer.leases).
        queryset = queryset.defer("message_data", "last_error", "recipients", "subject_text").annotate(
            data_length=_data_length(self.connection),
            inline_data=Case(
                When(data_length__lte=INLINE_DATA_BYTES, then=F("message_data")), default=None, output_field=TextField()
            ),
        )
        if router.db_for_read(DontSendEntry) == self.using:
            queryset = queryset.annotate(dont_send_list_in_use=Exists(DontSendEntry.objects.all()))
        if self.connection.vendor == "postgresql":
            queryset = queryset.annotate(commit_without_waiting_for_disk=COMMIT_WITHOUT_WAITING_FOR_DISK)
        features = self.connection.features
        if features.has_select_for_update_skip_locked:
            queryset = queryset.select_for_update(skip_locked=True)
        elif features.has_select_for_update:
            queryset = queryset.select_for_update()
        return queryset[:limit]

    def statement(self, limit: int, positioned: bool, mailers: Mailers | None = None) -> tuple[str, tuple] | None:
        try:
            query = self.queryset_for(limit, _SLOTS if positioned else None, _NOW, mailers).query
            sql, params = query.sql_with_params()
        except EmptyResultSet:
            return None
        if self.connection.vendor == "mysql":
            return _with_queue_index(sql, self.connection), params
        return sql, params

    def read_data(self, message: Message) -> None:
        """Fill in ``message.message_data`` from the claim's columns, or from the row when it is too big.

        A claim fetches the data of the rows up to :data:`INLINE_DATA_BYTES`
        long, and the length of the others: a claim of a hundred messages
        with big attachments would otherwise hold them all in memory at once.
        A bigger row's data is read by its primary key, in the claim's
        transaction (the row is locked), when its turn comes.
        """
        state = message.__dict__
        data = state.pop("inline_data", None)
        length = state.get("data_length")  # kept: is_big() is asked again when the message is let go
        if data is None and length is not None and length > INLINE_DATA_BYTES:
            data = Message.objects.using(self.using).filter(pk=message.pk).values_list("message_data", flat=True)[0]
        state["message_data"] = data


# Rows whose data is longer than this (in bytes; characters on SQLite) are read one at a time, when sent.
INLINE_DATA_BYTES = 128 * 1024


def is_big(message: Message) -> bool:
    """Will :meth:`Claimer.read_data` read this claimed message's data with a query of its own?"""
    length = message.__dict__.get("data_length")
    return length is not None and length > INLINE_DATA_BYTES


def _data_length(connection) -> Func:
    if connection.vendor in ("postgresql", "mysql"):
        # In bytes; PostgreSQL reads it from the stored value's header, without decompressing it.
        return Func(F("message_data"), function="OCTET_LENGTH", output_field=IntegerField())
    return Length("message_data")


Position = tuple  # (priority, when_added, id) of a message, in send order

# Which messages a claim may take by their ``mailer`` column: ("only", aliases) or ("except", aliases).
# ``Message.mailer`` is NULL for the default mailer; "except" keeps those, "only" does not.
Mailers = tuple[str, frozenset[str]]


def mailers_filter(mailers: Mailers) -> Q:
    """The messages that ``mailers`` lets a claim take, as a filter."""
    which, aliases = mailers
    in_aliases = Q(mailer__in=sorted(aliases))
    return in_aliases if which == "only" else ~in_aliases


class _Slot:
    """Stands for one value of a position in a claim statement built once; replaced at each claim."""


_SLOTS = (_Slot(), _Slot(), _Slot())
_NOW = _Slot()


def _due(connection, now: Any) -> RawSQL:
    """Messages that may be sent at ``now`` (a database value): no ``not_before``, or one that has passed.

    A filter on the rows the queue index yields in send order: the claim still reads the index in order,
    and passes over the few rows waiting for a later attempt.
    """
    column = f"{connection.ops.quote_name(Message._meta.db_table)}.{connection.ops.quote_name('not_before')}"
    return RawSQL(f"({column} IS NULL OR {column} <= %s)", (now,), output_field=models.BooleanField())


def _after_position(connection, values: tuple) -> RawSQL:
    """The messages after ``values`` = (priority, when_added, id) in send order, the queue index's order."""
    table = connection.ops.quote_name(Message._meta.db_table)
    priority, when_added, pk = (
        f"{table}.{connection.ops.quote_name(name)}" for name in ("priority", "when_added", "id")
    )
    p, w, i = values
    if connection.vendor == "mysql":
        # Spelled out: MySQL/MariaDB read a range of the index for these, not for a row comparison.
        sql = f"({priority} > %s OR ({priority} = %s AND ({when_added} > %s OR ({when_added} = %s AND {pk} > %s))))"
        return RawSQL(sql, (p, p, w, w, i), output_field=models.BooleanField())
    sql = f"(({priority}, {when_added}, {pk}) > (%s, %s, %s))"
    return RawSQL(sql, (p, w, i), output_field=models.BooleanField())


class _Reader:
    """Turns the rows of a claim into :class:`Message` instances, as ``raw()`` would.

    Columns are matched to fields by name, so a ``queryset`` with deferred
    fields or annotations of its own works too; the rest of the columns
    become attributes. Worked out once per pass, from the first claim's
    columns: ``raw()`` does it again for every query.
    """

    def __init__(self, description: Sequence, queryset: QuerySet, using: str) -> None:
        names = [column[0] for column in description]
        fields = [field for field in Message._meta.concrete_fields if field.column in names]
        self.using = using
        positions = [names.index(field.column) for field in fields]
        model_columns = {field.column for field in fields}
        self.extra = [(i, name) for i, name in enumerate(names) if name not in model_columns]
        self.compiler = queryset.query.get_compiler(using)
        table = Message._meta.db_table
        converters = self.compiler.get_converters([field.get_col(table) for field in fields])
        self.converters = {positions[i]: convert for i, convert in converters.items()}
        # Every field's value in the model's order, DEFERRED (one past the row's end) for a column not
        # read: from_db() then takes its quick way, without matching names to fields for each row.
        position_of = {field.column: position for field, position in zip(fields, positions, strict=True)}
        self.attnames = [field.attname for field in Message._meta.concrete_fields]
        self.values = operator.itemgetter(
            *(position_of.get(field.column, len(names)) for field in Message._meta.concrete_fields)
        )

    def messages(self, rows: list[tuple]) -> list[Message]:
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        using, attnames, values, extra = self.using, self.attnames, self.values, self.extra
        from_db = Message.from_db
        messages = []
        for row in rows:
            message = from_db(using, attnames, values((*row, DEFERRED)))
            for i, name in extra:
                setattr(message, name, row[i])
            messages.append(message)
        return messages


def _with_queue_index(sql: str, connection) -> str:
    """MySQL/MariaDB: the claim, reading the queue index named in an index hint.

    InnoDB locks every row a locking read examines, not only those it
    returns. When the optimizer scans and sorts the table instead of reading
    the index in order (likely on a queue, whose statistics are stale as
    often as not), the first sender locks every queued row and ``SKIP
    LOCKED`` leaves the others nothing to do. If the SQL is not as expected,
    it is left as it is: the claim is still correct.
    """
    table = connection.ops.quote_name(Message._meta.db_table)
    index = connection.ops.quote_name(QUEUE_INDEX)
    return sql.replace(f"FROM {table}", f"FROM {table} FORCE INDEX ({index})", 1)


def _take_sqlite_write_lock(connection) -> None:
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET priority = priority WHERE 1 = 0")
