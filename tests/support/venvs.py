"""Cached virtualenvs for the tests that run other versions of things (Django, django-mailer 2.3.2, drivers).

A venv lives under ``$MAILER_TEST_CACHE_DIR`` (default ``~/.cache/django-mailer-tests``), in a directory named
after what is in it, so a rerun reuses it. A file lock makes parallel test runs build it once; an unreachable
package index skips the test (fails it with ``MAILER_TEST_REQUIRE_SERVICES=1``). The venvs hold third-party
packages only: where our package runs in them, it runs from the working tree (``PYTHONPATH=<repo root>``).

Used by ``tests/dropin/legacy_venv.py``, ``tests/upgrade/django_venv.py`` and ``tests/support/pg_driver_venv.py``.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT
from tests.support.services import unavailable

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
    """Where the venvs are kept: ``$MAILER_TEST_CACHE_DIR``, else ``django-mailer-tests`` in the user's cache."""
    if custom := os.environ.get("MAILER_TEST_CACHE_DIR"):
        return Path(custom)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "django-mailer-tests"


def probe_python(python: str) -> tuple[str, tuple[int, int]] | str:
    """``(real executable, (major, minor))`` of ``python``, or why it does not run.

    ``shutil.which`` finds pyenv shims even for versions pyenv has not enabled; those fail when run.
    """
    code = "import sys; print(sys.executable); print(*sys.version_info[:2])"
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python}: {exc}"
    if result.returncode:
        return f"{python}: " + (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[0]
    executable, version = result.stdout.splitlines()[-2:]
    major, minor = map(int, version.split())
    return executable, (major, minor)


def django_requirements(series: str) -> tuple[list[str], list[str]]:
    """pip requirements for Django ``series`` plus our other dependencies, and those dependencies' names."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    names = {re.match(r"[A-Za-z0-9._-]+", req)[0]: req for req in pyproject["project"]["dependencies"]}
    others = {name: req for name, req in names.items() if name.lower() != "django"}
    major, minor = map(int, series.split("."))
    return [f"Django>={series},<{major}.{minor + 1}", *others.values()], list(others)


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(cmd, timeout=PIP_TIMEOUT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=cache_dir()
    )


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
