"""A cached virtualenv with the real django-mailer 2.3.2 from PyPI, for the drop-in test (``tests/test_dropin.py``).

The venv lives under ``$MAILER_TEST_CACHE_DIR`` (default ``~/.cache/django-mailer-tests``), in a directory
named after what is in it (``venv-2.3.2-django5.2-py3.11``), so a rerun reuses it. Database drivers are added
to it only when the vendor under test needs them. A file lock makes parallel test runs build it once.

:func:`cached_venv` is the generic part (lock, build, offline detection, drivers), shared with the Django
venvs of the upgrade test (``tests/upgrade/django_venv.py``).
"""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import django
import pytest

from tests.support.services import services_required

LEGACY_VERSION = "2.3.2"
# The Django that 2.3.2 ran under: 4.2 when the suite runs on 4.2 (a database never goes back to an older
# Django), else 5.2, the newest 2.3.2 supports, so that the suite on Django 6 tests an upgrade of both.
DJANGO_SERIES = "4.2" if django.VERSION < (5, 2) else "5.2"
DJANGO_SPEC = f"Django>={DJANGO_SERIES},<{DJANGO_SERIES[:2]}{int(DJANGO_SERIES[2:]) + 1}"
PIP_TIMEOUT = 600

# What each vendor needs on top of the base install; the value is the module that proves it is there.
DRIVERS = {
    "sqlite": ([], None),
    "postgres": (["psycopg[binary]"], "psycopg"),
    "mysql": (["mysqlclient"], "MySQLdb"),
}

# pip output that means "could not reach the package index", as opposed to a broken build.
_OFFLINE_SIGNS = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "Read timed out",
    "ProxyError",
)


def cache_dir() -> Path:
    if custom := os.environ.get("MAILER_TEST_CACHE_DIR"):
        return Path(custom)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "django-mailer-tests"


def venv_dir() -> Path:
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_dir() / f"venv-{LEGACY_VERSION}-django{DJANGO_SERIES}-{py}"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(cmd, timeout=PIP_TIMEOUT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=cache_dir()
    )


def unavailable(reason: str):
    """Skip the test, or fail it when ``MAILER_TEST_REQUIRE_SERVICES=1``."""
    if services_required():
        pytest.fail(f"{reason} (MAILER_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _pip_install(venv: Path, requirements: list[str], what: str):
    try:
        result = _run([_python(venv), "-m", "pip", "install", "-q", *requirements])
    except subprocess.TimeoutExpired:
        unavailable(f"installing {what} from PyPI took more than {PIP_TIMEOUT}s")
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    if any(sign in output for sign in _OFFLINE_SIGNS):
        unavailable(f"cannot install {what} from PyPI (index unreachable?):\n{_tail(output)}")
    pytest.fail(f"pip could not install {what} into {venv}:\n{_tail(output)}", pytrace=False)


def _problem(venv: Path, check: str) -> str | None:
    """None when the venv's Python runs the code ``check``; otherwise why not."""
    if not _python(venv).exists():
        return f"{_python(venv)} does not exist"
    try:
        result = _run([_python(venv), "-c", check], timeout=120)
    except subprocess.TimeoutExpired:
        return "the check timed out"
    return _tail(result.stderr) if result.returncode else None


def cached_venv(venv: Path, requirements: list[str], check: str, vendor: str, what: str, python=sys.executable) -> Path:
    """The interpreter of the venv at ``venv``; build it first (with ``python``) unless it is already there.

    ``requirements`` are pip-installed into it, and the code ``check`` must then run; the driver ``vendor``
    needs is added on top. A venv that fails ``check`` is rebuilt from scratch. An unreachable package
    index skips the test (fails it with ``MAILER_TEST_REQUIRE_SERVICES=1``).
    """
    extras, module = DRIVERS[vendor]
    with_driver = check + (f"\nimport {module}" if module else "")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _problem(venv, with_driver) is None:
            return _python(venv)
        if _problem(venv, check) is not None:
            shutil.rmtree(venv, ignore_errors=True)
            result = _run([python, "-m", "venv", venv], timeout=300)
            if result.returncode != 0:
                pytest.fail(f"could not create a virtualenv at {venv}:\n{result.stderr}", pytrace=False)
            try:
                _pip_install(venv, requirements, what)
            except BaseException:
                shutil.rmtree(venv, ignore_errors=True)  # half-built: never reuse it
                raise
            if problem := _problem(venv, check):
                pytest.fail(f"{venv} was built but does not have {what}:\n{problem}", pytrace=False)
        if extras:
            _pip_install(venv, extras, " ".join(extras))
            if problem := _problem(venv, with_driver):
                pytest.fail(
                    f"{venv} has {' '.join(extras)} installed but cannot import {module}:\n{problem}", pytrace=False
                )
    return _python(venv)


def legacy_python(vendor: str) -> Path:
    """The interpreter of a venv with django-mailer 2.3.2 (and the driver ``vendor`` needs); build it if needed."""
    check = (
        "import django, mailer\n"
        f"assert mailer.__version__ == {LEGACY_VERSION!r}, mailer.__version__\n"
        f"assert django.get_version().startswith({DJANGO_SERIES + '.'!r}), django.get_version()"
    )
    requirements = [f"django-mailer=={LEGACY_VERSION}", DJANGO_SPEC]
    return cached_venv(venv_dir(), requirements, check, vendor, f"django-mailer {LEGACY_VERSION}")
