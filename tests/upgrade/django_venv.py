"""Cached virtualenvs with a given Django series (and the database driver of the vendor under test).

``django_python("6.1", python)`` returns the interpreter of ``venv-django6.1-py3.13`` under the test cache
directory, built once from ``python`` (see :func:`tests.support.venvs.cached_venv`: file lock, offline
detection, drivers). The venvs hold third-party packages only: Django and our other dependencies from
``pyproject.toml``. Our package runs from the working tree (``PYTHONPATH=<repo root>``), so code changes
never make a venv stale.
"""

import shutil
import sys
from pathlib import Path

from tests.support.services import unavailable
from tests.support.venvs import cache_dir, cached_venv, django_requirements, probe_python

# Newest first: the first one that runs and is recent enough wins.
CANDIDATES = ("python3.14", "python3.13", "python3.12")


def find_python(minimum: tuple[int, int]) -> str:
    """This interpreter, else the newest ``python3.X`` on PATH, that is at least ``minimum``; else skip."""
    tried = []
    for name in (sys.executable, *CANDIDATES):
        path = shutil.which(name)
        if path is None:
            tried.append(f"{name}: not on PATH")
            continue
        found = probe_python(path)
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


def django_python(series: str, python: str = sys.executable, vendor: str = "sqlite") -> Path:
    """The interpreter of a venv with Django ``series`` (e.g. "6.1") built from ``python``, and ``vendor``'s driver."""
    found = probe_python(python)
    if isinstance(found, str):
        unavailable(f"cannot run the interpreter for the Django {series} venv: {found}")
    executable, (major, minor) = found
    requirements, dependencies = django_requirements(series)
    check = (
        "import importlib.metadata, django\n"
        f"assert django.VERSION[:2] == {tuple(map(int, series.split('.')))!r}, django.get_version()\n"
        f"for name in {dependencies!r}: importlib.metadata.version(name)"
    )
    venv = cache_dir() / f"venv-django{series}-py{major}.{minor}"
    return cached_venv(venv, requirements, check, vendor, f"Django {series}", python=executable)
