"""django-mailer's tables missing (``migrate`` not run) or behind the code, said as such.

Without this, forgetting ``manage.py migrate`` shows up as ``no such table: mailer_dontsendentry`` in a
traceback, naming a table that looks unrelated to sending mail. The database's error is recognised only
once it happened, from its text (each vendor words it its own way, and names the table), so that no
query is spent on it while the tables are there; only then is the database asked whether any of them is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router

MIGRATE = "run `manage.py migrate mailer`"

_NO_TABLE = (
    re.compile(r"no such table: (?:\w+\.)?(?P<table>\w+)"),  # SQLite
    re.compile(r'relation "(?:\w+\.)?(?P<table>\w+)" does not exist'),  # PostgreSQL
    re.compile(r"Table '(?:[^'.]+\.)?(?P<table>\w+)' doesn't exist"),  # MySQL, MariaDB
)
_NO_COLUMN = (
    re.compile(r"no such column: (?P<table>\w+)\.(?P<column>\w+)"),  # SQLite, reading
    re.compile(r"table (?P<table>\w+) has no column named (?P<column>\w+)"),  # SQLite, writing
    re.compile(r"column (?P<table>\w+)\.(?P<column>\w+) does not exist"),  # PostgreSQL, reading
    re.compile(r'column "(?P<column>\w+)" of relation "(?P<table>\w+)" does not exist'),  # PostgreSQL, writing
    re.compile(r"Unknown column '(?:(?P<table>\w+)\.)?(?P<column>\w+)'"),  # MySQL, MariaDB (no table: writing)
)


class TablesMissing(ImproperlyConfigured):
    """django-mailer's tables do not exist, or lack a column of this version: ``migrate`` was not run."""


def _ours() -> set[str]:
    return {model._meta.db_table.lower() for model in apps.get_app_config("mailer").get_models()}


def _our_column(table: str | None, column: str) -> bool:
    """Is ``column`` one of our tables' (of ``table``, when the database named one of ours, not an alias)?"""
    if table is not None and table.lower() not in _ours():
        table = None  # an alias of a subquery ("U0")
    for model in apps.get_app_config("mailer").get_models():
        if table is None or model._meta.db_table.lower() == table.lower():
            if any(field.column == column for field in model._meta.concrete_fields):
                return True
    return False


def _queue_table_exists() -> bool:
    """Is there a queue table (some migrations were run)? Asked only once an error said a table is missing."""
    model = apps.get_model("mailer", "Message")
    connection = connections[router.db_for_write(model)]
    try:
        with connection.cursor() as cursor:
            return model._meta.db_table in connection.introspection.table_names(cursor)
    except DatabaseError:  # in a transaction the error aborted (PostgreSQL): can't tell
        return False


def explain(exc: BaseException) -> TablesMissing | None:
    """The :class:`TablesMissing` that the database error ``exc`` stands for, if it is one; else None."""
    if not isinstance(exc, DatabaseError):
        return None
    text = str(exc)
    for pattern in _NO_COLUMN:  # first: PostgreSQL's 'column "x" of relation "t" does not exist' names a relation
        found = pattern.search(text)
        if found and _our_column(found["table"], found["column"]):
            where = f"{found['table']} has no column {found['column']}" if found["table"] else f"no {found['column']}"
            return TablesMissing(
                f"the mailer tables are not up to date ({where}): {MIGRATE} (the database says: {_line(text)})"
            )
    for pattern in _NO_TABLE:
        found = pattern.search(text)
        if found and found["table"].lower() in _ours():
            if not _queue_table_exists():
                return TablesMissing(f"the mailer tables do not exist: {MIGRATE} (the database says: {_line(text)})")
            return TablesMissing(
                f"the mailer tables are not up to date (no table {found['table']}): {MIGRATE} "
                f"(the database says: {_line(text)})"
            )
    return None


def raise_if_missing(exc: BaseException) -> None:
    """Raise the :class:`TablesMissing` that ``exc`` stands for, from it; do nothing if it is another error."""
    missing = explain(exc)
    if missing is not None:
        raise missing from exc


@contextmanager
def needed() -> Iterator[None]:
    """Around code that uses the mailer tables: a database error saying they are missing becomes
    :class:`TablesMissing`; every other error goes through as it is."""
    try:
        yield
    except DatabaseError as exc:
        raise_if_missing(exc)
        raise


def _line(text: str) -> str:
    return " ".join(text.split())
