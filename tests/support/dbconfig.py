"""Database settings for the test suite, shared by ``tests.settings`` and ``tests.project.settings``.

``MAILER_TEST_DB`` picks the vendor (sqlite, postgres or mysql). Servers are found through the usual
client variables: PGHOST/PGPORT/PGUSER/PGPASSWORD and MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD.
"""

import os

VENDORS = ("sqlite", "postgres", "mysql")


def vendor() -> str:
    name = os.environ.get("MAILER_TEST_DB", "sqlite").strip().lower() or "sqlite"
    if name not in VENDORS:
        raise ValueError(f"MAILER_TEST_DB must be one of {', '.join(VENDORS)}, not {name!r}")
    return name


def pg_params() -> dict:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": int(os.environ.get("PGPORT", "5432")),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD", ""),
    }


def mysql_params() -> dict:
    return {
        "host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "port": int(os.environ.get("MYSQL_PORT", "3306")),
        "user": os.environ.get("MYSQL_USER", "root"),
        "password": os.environ.get("MYSQL_PASSWORD", ""),
    }


def database(name: str | None = None, kind: str | None = None) -> dict:
    """The ``DATABASES["default"]`` entry for ``kind`` (default: ``MAILER_TEST_DB``).

    Each test run gets its own test database on the servers, so that runs in parallel (tox -p, two
    developers on one machine) do not drop each other's.
    """
    kind = kind or vendor()
    test_name = f"test_mailer_{os.getpid()}"
    if kind == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name or ":memory:"}
    if kind == "postgres":
        p = pg_params()
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name or "test",
            "USER": p["user"],
            "PASSWORD": p["password"],
            "HOST": p["host"],
            "PORT": p["port"],
            "TEST": {"NAME": test_name},
        }
    p = mysql_params()
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": name or "test",
        "USER": p["user"],
        "PASSWORD": p["password"],
        "HOST": p["host"],
        "PORT": p["port"],
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": test_name, "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
    }
