"""Reaching the PostgreSQL and MariaDB/MySQL servers from tests and from ``runtests.py``.

``requires_postgres()`` / ``requires_mysql()`` skip the calling test when the server or its driver is
missing, or fail it when ``MAILER_TEST_REQUIRE_SERVICES=1`` (as CI sets it).
"""

import functools
import os
import socket
import uuid
from contextlib import closing, contextmanager

import pytest

from tests.support.dbconfig import mysql_params, pg_params


def services_required() -> bool:
    return os.environ.get("MAILER_TEST_REQUIRE_SERVICES") == "1"


def unavailable(reason: str, *, required_by: str = "MAILER_TEST_REQUIRE_SERVICES") -> None:
    """Skip the calling test because ``reason``; fail it instead when the variable ``required_by`` is ``1``.

    The one home of that rule: servers, drivers, interpreters, package-index downloads and the browser all go
    through it. CI sets ``MAILER_TEST_REQUIRE_SERVICES=1``; the browser test has its own ``MAILER_TEST_BROWSER``.
    """
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{reason} ({required_by}=1)", pytrace=False)
    pytest.skip(reason)


def pg_connect(dbname="postgres", params: dict | None = None):
    """An autocommit connection (psycopg 3, else psycopg2) to ``dbname`` on the shared PostgreSQL server,
    or on the server ``params`` (host, port, user...) name."""
    p = pg_params() if params is None else params
    try:
        import psycopg
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(dbname=dbname, connect_timeout=5, **p)
        conn.autocommit = True
        return conn
    return psycopg.connect(dbname=dbname, connect_timeout=5, autocommit=True, **p)


def mysql_connect():
    """An autocommit connection to the shared MariaDB/MySQL server (no database selected)."""
    import MySQLdb

    p = mysql_params()
    return MySQLdb.connect(
        host=p["host"], port=p["port"], user=p["user"], password=p["password"], connect_timeout=5, autocommit=True
    )


def _problem(name, host, port, connect) -> str | None:
    try:
        socket.create_connection((host, port), timeout=3).close()
        connect().close()
    except ImportError as exc:
        return f"{name} driver not installed: {exc}"
    except Exception as exc:
        return f"{name} not reachable at {host}:{port}: {exc}".strip()
    return None


@functools.cache
def postgres_problem() -> str | None:
    """None when PostgreSQL answers; otherwise why not."""
    p = pg_params()
    return _problem("PostgreSQL", p["host"], p["port"], pg_connect)


@functools.cache
def mysql_problem() -> str | None:
    """None when MariaDB/MySQL answers; otherwise why not."""
    p = mysql_params()
    return _problem("MySQL", p["host"], p["port"], mysql_connect)


def requires_postgres():
    if problem := postgres_problem():
        unavailable(problem)


def requires_mysql():
    if problem := mysql_problem():
        unavailable(problem)


def _execute(conn, *statements):
    with closing(conn), closing(conn.cursor()) as cursor:
        for sql in statements:
            cursor.execute(sql)


@contextmanager
def fresh_postgres_database(prefix="mailer_t"):
    """Create an empty PostgreSQL database for the duration of the block; yield its name."""
    requires_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _execute(pg_connect(), f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _execute(pg_connect(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_mysql_database(prefix="mailer_t"):
    """Create an empty MariaDB/MySQL database (utf8mb4) for the duration of the block; yield its name."""
    requires_mysql()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _execute(mysql_connect(), f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield name
    finally:
        _execute(mysql_connect(), f"DROP DATABASE IF EXISTS `{name}`")


@contextmanager
def fresh_database(tmp_path, prefix: str):
    """Yield the ``MAILER_TEST_DB_NAME`` of an empty database of the vendor under test (a file for SQLite)."""
    from tests.support import dbconfig

    kind = dbconfig.vendor()
    if kind == "sqlite":
        yield str(tmp_path / f"{prefix}.sqlite3")
    elif kind == "postgres":
        with fresh_postgres_database(prefix) as name:
            yield name
    else:
        with fresh_mysql_database(prefix) as name:
            yield name
