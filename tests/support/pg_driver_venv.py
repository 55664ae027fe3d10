"""Cached virtualenvs where Django talks to PostgreSQL through another driver than the suite's psycopg 3.

``driver_python("psycopg2")`` returns the interpreter of ``venv-django5.2-psycopg2-py3.X`` under the test
cache directory (see :func:`tests.support.venvs.cached_venv`: file lock, offline detection), built
once with Django 5.2, our other dependencies from ``pyproject.toml`` and that driver only:

- ``psycopg2``: ``psycopg2-binary``, and no psycopg 3, so Django's PostgreSQL backend uses psycopg2;
- ``psycopg3.1``: psycopg 3.1, whose ``Connection.notifies()`` has no timeout (3.2 added it).

Like the other cached venvs they hold third-party packages only: our package runs from the working tree
(``PYTHONPATH=<repo root>``).
"""

import shutil
import sys
from pathlib import Path

from tests.support.venvs import cache_dir, cached_venv, django_requirements, probe_python

DJANGO_SERIES = "5.2"

# What to install, and what must then hold in the venv.
DRIVERS = {
    "psycopg2": (
        ["psycopg2-binary"],
        "import psycopg2\n"
        "assert importlib.util.find_spec('psycopg') is None, 'psycopg 3 is installed'\n"
        "from django.db.backends.postgresql.psycopg_any import is_psycopg3\n"
        "assert not is_psycopg3",
    ),
    "psycopg3.1": (
        ["psycopg[binary]>=3.1.8,<3.2"],
        "import psycopg\n"
        "assert psycopg.__version__.startswith('3.1.'), psycopg.__version__\n"
        "assert importlib.util.find_spec('psycopg2') is None, 'psycopg2 is installed'",
    ),
}


def driver_python(driver: str) -> Path:
    """The interpreter of the venv for ``driver`` (a key of :data:`DRIVERS`); build it first if needed.

    Skips the test when the package index cannot be reached (fails it with ``MAILER_TEST_REQUIRE_SERVICES=1``).
    """
    packages, driver_check = DRIVERS[driver]
    requirements, dependencies = django_requirements(DJANGO_SERIES)
    check = (
        "import importlib.metadata, importlib.util, django\n"
        f"assert django.VERSION[:2] == {tuple(map(int, DJANGO_SERIES.split('.')))!r}, django.get_version()\n"
        f"for name in {dependencies!r}: importlib.metadata.version(name)\n" + driver_check
    )
    python, (major, minor) = _interpreter()
    venv = cache_dir() / f"venv-django{DJANGO_SERIES}-{driver}-py{major}.{minor}"
    # "sqlite": cached_venv adds no driver of its own (for "postgres" it would add psycopg 3).
    return cached_venv(
        venv, [*requirements, *packages], check, "sqlite", f"Django {DJANGO_SERIES} and {driver}", python=python
    )


def _interpreter() -> tuple[str, tuple[int, int]]:
    """Python 3.11 when there is one (psycopg 3.1 has no wheels for 3.13), else this interpreter."""
    for name in ("python3.11", sys.executable):
        path = shutil.which(name)
        found = probe_python(path) if path else "not found"
        if not isinstance(found, str):
            return found
    return sys.executable, sys.version_info[:2]
