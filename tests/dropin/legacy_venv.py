"""A cached virtualenv with the real django-mailer 2.3.2 from PyPI, for the drop-in test (``tests/test_dropin.py``).

The venv lives under ``$MAILER_TEST_CACHE_DIR`` (default ``~/.cache/django-mailer-tests``), in a directory
named after what is in it (``venv-2.3.2-django5.2-py3.11``), so a rerun reuses it. Database drivers are added
to it only when the vendor under test needs them. A file lock makes parallel test runs build it once.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import services_required

LEGACY_VERSION = "2.3.2"
DJANGO_SERIES = "5.2"
DJANGO_SPEC = "Django>=5.2,<5.3"
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


def _unavailable(reason: str):
    if services_required():
        pytest.fail(f"{reason} (MAILER_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def _pip_install(venv: Path, requirements: list[str], what: str):
    try:
        result = _run([_python(venv), "-m", "pip", "install", "-q", *requirements])
    except subprocess.TimeoutExpired:
        _unavailable(f"installing {what} from PyPI took more than {PIP_TIMEOUT}s")
    if result.returncode == 0:
        return
    output = (result.stdout + result.stderr).strip()
    tail = "\n".join(output.splitlines()[-15:])
    if any(sign in output for sign in _OFFLINE_SIGNS):
        _unavailable(f"cannot install {what} from PyPI (index unreachable?):\n{tail}")
    pytest.fail(f"pip could not install {what} into {venv}:\n{tail}", pytrace=False)


def _check(venv: Path, module: str | None) -> bool:
    """True when the venv runs and has django-mailer 2.3.2, Django 5.2 and ``module``."""
    if not _python(venv).exists():
        return False
    code = (
        "import django, mailer, sys;"
        f"assert mailer.__version__ == {LEGACY_VERSION!r}, mailer.__version__;"
        f"assert django.get_version().startswith({DJANGO_SERIES + '.'!r}), django.get_version();"
        + (f"import {module};" if module else "")
    )
    try:
        return _run([_python(venv), "-c", code], timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def legacy_python(vendor: str) -> Path:
    """The interpreter of a venv with django-mailer 2.3.2 (and the driver ``vendor`` needs); build it if needed."""
    extras, module = DRIVERS[vendor]
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _check(venv, module):
            return _python(venv)
        if not _check(venv, None):
            shutil.rmtree(venv, ignore_errors=True)
            result = _run([sys.executable, "-m", "venv", venv], timeout=300)
            if result.returncode != 0:
                pytest.fail(f"could not create a virtualenv at {venv}:\n{result.stderr}", pytrace=False)
            try:
                _pip_install(venv, [f"django-mailer=={LEGACY_VERSION}", DJANGO_SPEC], f"django-mailer {LEGACY_VERSION}")
            except BaseException:
                shutil.rmtree(venv, ignore_errors=True)  # half-built: never reuse it
                raise
            if not _check(venv, None):
                pytest.fail(f"{venv} was built but does not import django-mailer {LEGACY_VERSION}", pytrace=False)
        if extras:
            _pip_install(venv, extras, " ".join(extras))
            if not _check(venv, module):
                pytest.fail(f"{venv} has {' '.join(extras)} installed but cannot import {module}", pytrace=False)
    return _python(venv)
