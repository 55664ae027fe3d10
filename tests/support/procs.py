"""Run ``django-admin`` commands of ``tests.project`` in a child process.

The child reads its configuration from the environment (see ``tests/project/settings.py``); ``env``
is added to this process's environment.
"""

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def project_env(env: dict | None = None, cwd: Path = REPO_ROOT) -> dict:
    """This process's environment for a child of ``tests.project`` run in ``cwd``, with ``env`` added.

    A child run in the repository without a ``MAILER_TEST_LOCK_PATH`` of its test's gets one of this pytest
    process's: its default, ``send_mail.lock`` in the working directory, would be shared with every other
    test run in this checkout (``.ci/run`` runs two at once), whose senders would then find it held.
    """
    full = dict(os.environ)
    full["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full.get("PYTHONPATH")]))
    full["PYTHONUNBUFFERED"] = "1"
    full.update({key: str(value) for key, value in (env or {}).items()})
    if Path(cwd) == REPO_ROOT and "MAILER_TEST_LOCK_PATH" not in full:
        full["MAILER_TEST_LOCK_PATH"] = str(_run_lock_dir() / "send_mail")
    return full


def _run_lock_dir() -> Path:
    """A directory of this pytest process's own for the lock file of children that set none."""
    path = Path(tempfile.gettempdir(), f"mailer-tests-{os.getpid()}")
    path.mkdir(exist_ok=True)
    return path


def _command(args, python: str = sys.executable) -> list[str]:
    return [python, "-m", "django", *map(str, args)]


def manage(
    *args, env: dict | None = None, timeout: float = 120, python: str = sys.executable
) -> subprocess.CompletedProcess:
    """Run a management command to completion; output is captured as text, the exit code is not checked.

    ``python``: the interpreter to run it with (a cached venv with another database driver, say).
    """
    return subprocess.run(
        _command(args, python), env=project_env(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def popen_manage(*args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start a long-running management command (``runmailer``...); the caller stops it and waits for it."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(_command(args), env=project_env(env), cwd=REPO_ROOT, **kwargs)


@contextmanager
def running_command(*args, env: dict | None = None, **kwargs) -> Iterator[subprocess.Popen]:
    """``popen_manage()`` for the length of the block; a child still running at its end (the test failed
    before it stopped the child) is killed, so that no test leaves a sender behind."""
    proc = popen_manage(*args, env=env, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


_PEAK_RSS = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def manage_peak_rss(*args, env: dict | None = None, timeout: float = 300) -> tuple[subprocess.CompletedProcess, int]:
    """Run a management command to completion; also the peak resident memory of its process, in KiB.

    Measured by a wrapper process whose only child is the command (``RUSAGE_CHILDREN``'s ``ru_maxrss``),
    so that no other child of the test process counts. The command's standard error is captured.
    """
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *_command(args)],
        env=project_env(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, int(done.stdout.strip().splitlines()[-1])
