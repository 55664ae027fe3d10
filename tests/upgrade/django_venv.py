"""Cached virtualenvs with a given Django series (and the database driver of the vendor under test).

``django_python("6.1", python)`` returns the interpreter of ``venv-django6.1-py3.13`` under the test cache
directory, built once from ``python`` (see :func:`tests.dropin.legacy_venv.cached_venv`: file lock, offline
detection, drivers). The venvs hold third-party packages only: Django and our other dependencies from
``pyproject.toml``. Our package runs from the working tree (``PYTHONPATH=<repo root>``), so code changes
never make a venv stale.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.dropin.legacy_venv import cache_dir, cached_venv, unavailable
from tests.support.procs import REPO_ROOT

# Newest first: the first one that runs and is recent enough wins.
CANDIDATES = ("python3.14", "python3.13", "python3.12")


def _probe(python: str) -> tuple[str, tuple[int, int]] | str:
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


def find_python(minimum: tuple[int, int]) -> str:
    """This interpreter, else the newest ``python3.X`` on PATH, that is at least ``minimum``; else skip."""
    tried = []
    for name in (sys.executable, *CANDIDATES):
        path = shutil.which(name)
        if path is None:
            tried.append(f"{name}: not on PATH")
            continue
        found = _probe(path)
        if isinstance(found, str):
            tried.append(found)
        elif found[1] < minimum:
            tried.append(f"{path}: Python {'.'.join(map(str, found[1]))}")
        else:
            return found[0]
    wanted = ".".join(map(str, minimum))
    unavailable(
        f"no Python >= {wanted} found (with pyenv, set PYENV_VERSION, e.g. 3.11.7:3.12.1:3.13.0); tried:\n  "
        + "\n  ".join(tried)
    )


def _requirements(series: str) -> tuple[list[str], list[str]]:
    """pip requirements for Django ``series`` plus our other dependencies, and those dependencies' names."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    names = {re.match(r"[A-Za-z0-9._-]+", req)[0]: req for req in pyproject["project"]["dependencies"]}
    others = {name: req for name, req in names.items() if name.lower() != "django"}
    major, minor = map(int, series.split("."))
    return [f"Django>={series},<{major}.{minor + 1}", *others.values()], list(others)


def django_python(series: str, python: str = sys.executable, vendor: str = "sqlite") -> Path:
    """The interpreter of a venv with Django ``series`` (e.g. "6.1") built from ``python``, and ``vendor``'s driver."""
    found = _probe(python)
    if isinstance(found, str):
        unavailable(f"cannot run the interpreter for the Django {series} venv: {found}")
    executable, (major, minor) = found
    requirements, dependencies = _requirements(series)
    check = (
        "import importlib.metadata, django\n"
        f"assert django.VERSION[:2] == {tuple(map(int, series.split('.')))!r}, django.get_version()\n"
        f"for name in {dependencies!r}: importlib.metadata.version(name)"
    )
    venv = cache_dir() / f"venv-django{series}-py{major}.{minor}"
    return cached_venv(venv, requirements, check, vendor, f"Django {series}", python=executable)
