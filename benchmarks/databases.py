"""A fresh, migrated database for every measurement, on each vendor.

Each side (package) migrates a template once per run with its own migrations; every measurement then gets a
copy: a copied file on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL. MariaDB/MySQL has no
templates, so each of its databases is migrated anew. Servers are found like the test suite finds them
(``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``, ``MYSQL_HOST``/``MYSQL_PORT``/``MYSQL_USER``/
``MYSQL_PASSWORD``; defaults 127.0.0.1, postgres / root, no password).
"""

from __future__ import annotations

import itertools
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.support.dbconfig
from tests.support.dbconfig import database, mysql_params, pg_params  # noqa: E402  (the servers, found as the test suite finds them)

LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}


class Vendor:
    """Creates databases for one vendor; ``migrate(side, databases_entry)`` runs the side's migrations."""

    name = ""

    def __init__(self, tmp: Path, migrate) -> None:
        self.tmp = tmp
        self.migrate = migrate
        self.run_id = uuid.uuid4().hex[:8]
        self.counter = itertools.count()
        self.templates: dict[str, object] = {}

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def template(self, side) -> object:
        if side.key not in self.templates:
            self.templates[side.key] = self._make_template(side)
        return self.templates[side.key]

    def close(self) -> None:
        pass


class SQLite(Vendor):
    name = "sqlite"

    def entry(self, path: Path) -> dict:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "OPTIONS": {"timeout": 60}}

    def _make_template(self, side) -> Path:
        path = self.tmp / f"template-{side.key}.sqlite3"
        self.migrate(side, self.entry(path))
        return path

    @contextmanager
    def fresh(self, side):
        template = self.template(side)
        path = self.tmp / f"db-{side.key}-{next(self.counter)}.sqlite3"
        shutil.copyfile(template, path)
        try:
            yield self.entry(path)
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


class Postgres(Vendor):
    name = "postgres"

    def _admin(self):
        import psycopg

        return psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=10, **pg_params())

    def _execute(self, sql: str) -> None:
        with self._admin() as conn:
            conn.execute(sql)

    def entry(self, name: str) -> dict:
        return database(name, "postgres")

    def _make_template(self, side) -> str:
        name = f"bench_{self.run_id}_template_{side.key}"
        self._execute(f'CREATE DATABASE "{name}"')
        self.migrate(side, self.entry(name))
        return name

    @contextmanager
    def fresh(self, side):
        template = self.template(side)
        name = f"bench_{self.run_id}_{side.key}_{next(self.counter)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield self.entry(name)
        finally:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in self.templates.values():
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.templates.clear()


class MySQL(Vendor):
    name = "mysql"

    def _execute(self, sql: str) -> None:
        import MySQLdb

        p = mysql_params()
        conn = MySQLdb.connect(host=p["host"], port=p["port"], user=p["user"], password=p["password"])
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    def entry(self, name: str) -> dict:
        return database(name, "mysql")

    def template(self, side) -> object:  # nothing to copy from: see fresh()
        return None

    @contextmanager
    def fresh(self, side):
        name = f"bench_{self.run_id}_{side.key}_{next(self.counter)}"
        self._execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        try:
            self.migrate(side, self.entry(name))
            yield self.entry(name)
        finally:
            self._execute(f"DROP DATABASE IF EXISTS `{name}`")


VENDORS = {"sqlite": SQLite, "postgres": Postgres, "mysql": MySQL}
