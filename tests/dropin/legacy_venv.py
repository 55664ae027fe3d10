"""A cached virtualenv with the real django-mailer 2.3.2 from PyPI, for the drop-in test (``tests/test_dropin.py``).

The venv lives under ``$MAILER_TEST_CACHE_DIR`` (default ``~/.cache/django-mailer-tests``), in a directory
named after what is in it (``venv-2.3.2-django5.2-py3.11``), so a rerun reuses it. Database drivers are added
to it only when the vendor under test needs them. A file lock makes parallel test runs build it once.

The generic part (lock, build, offline detection, drivers) is :func:`tests.support.venvs.cached_venv`.
"""

import sys
from pathlib import Path

import django

from tests.support.venvs import cache_dir, cached_venv

LEGACY_VERSION = "2.3.2"
# The migrations django-mailer 2.3.2 ships: a database it created has exactly these applied.
LEGACY_MIGRATIONS = [
    "0001_initial",
    "0002_auto_20150720_1433",
    "0003_messagelog_message_id",
    "0004_auto_20190920_1512",
    "0005_id_bigautofield",
    "0006_message_retry_count",
    "0007_alter_messagelog_message_data",
]
# The Django that 2.3.2 ran under: 4.2 when the suite runs on 4.2 (a database never goes back to an older
# Django), else 5.2, the newest 2.3.2 supports, so that the suite on Django 6 tests an upgrade of both.
DJANGO_SERIES = "4.2" if django.VERSION < (5, 2) else "5.2"
DJANGO_SPEC = f"Django>={DJANGO_SERIES},<{DJANGO_SERIES[:2]}{int(DJANGO_SERIES[2:]) + 1}"


def venv_dir() -> Path:
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_dir() / f"venv-{LEGACY_VERSION}-django{DJANGO_SERIES}-{py}"


def legacy_python(vendor: str) -> Path:
    """The interpreter of a venv with django-mailer 2.3.2 (and the driver ``vendor`` needs); build it if needed."""
    check = (
        "import django, mailer\n"
        f"assert mailer.__version__ == {LEGACY_VERSION!r}, mailer.__version__\n"
        f"assert django.get_version().startswith({DJANGO_SERIES + '.'!r}), django.get_version()"
    )
    requirements = [f"django-mailer=={LEGACY_VERSION}", DJANGO_SPEC]
    return cached_venv(venv_dir(), requirements, check, vendor, f"django-mailer {LEGACY_VERSION}")
