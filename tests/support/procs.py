"""Run ``django-admin`` commands of ``tests.project`` in a child process.

The child reads its configuration from the environment (see ``tests/project/settings.py``); ``env``
is added to this process's environment.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def project_env(env: dict | None = None) -> dict:
    full = dict(os.environ)
    full["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full.get("PYTHONPATH")]))
    full["PYTHONUNBUFFERED"] = "1"
    full.update({key: str(value) for key, value in (env or {}).items()})
    return full


def _command(args) -> list[str]:
    return [sys.executable, "-m", "django", *map(str, args)]


def manage(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a management command to completion; output is captured as text, the exit code is not checked."""
    return subprocess.run(
        _command(args), env=project_env(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def popen_manage(*args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start a long-running management command (``runmailer``...); the caller stops it and waits for it."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(_command(args), env=project_env(env), cwd=REPO_ROOT, **kwargs)
