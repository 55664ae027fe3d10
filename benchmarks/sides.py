"""The two sides of the comparison and how their child processes are run.

* ``ours``: this package from the working tree (``PYTHONPATH=<repo root>``), run by an interpreter that has
  Django and the database drivers (by default the one running the benchmark).
* ``2.3.2``: django-mailer 2.3.2 from PyPI in a cached virtualenv, the one the drop-in test uses
  (``~/.cache/django-mailer-tests/venv-2.3.2-django5.2-pyX.Y``, or ``$MAILER_TEST_CACHE_DIR``); it is built
  here if missing. Its children run from a temporary directory with only that directory on ``PYTHONPATH``,
  so they cannot import the working tree's ``mailer``; each child checks where ``mailer`` came from.

Both sides run the same ``child.py`` with the same ``bench_settings.py``, copied into a directory of their
own under the run's temporary directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
LEGACY_VERSION = "2.3.2"
LEGACY_DJANGO = "5.2"
DRIVER_PACKAGES = {"postgres": ("psycopg[binary]", "psycopg"), "mysql": ("mysqlclient", "MySQLdb")}


class BenchError(RuntimeError):
    pass


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def cache_dir() -> Path:
    if custom := os.environ.get("MAILER_TEST_CACHE_DIR"):
        return Path(custom)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "django-mailer-tests"


def _python_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2], sep='.')"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _runs(python: Path, code: str) -> bool:
    if not python.exists():
        return False
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=_clean_env(), cwd="/")
    return result.returncode == 0


def legacy_python(base_python: str, vendors: list[str]) -> Path:
    """The interpreter of the cached django-mailer 2.3.2 venv (built with ``base_python`` if missing)."""
    return package_python(
        base_python,
        vendors,
        name=f"venv-{LEGACY_VERSION}",
        requirement=f"django-mailer=={LEGACY_VERSION}",
        check=f"import mailer\nassert mailer.__version__ == {LEGACY_VERSION!r}\n",
    )


def package_python(base_python: str, vendors: list[str], name: str, requirement: str, check: str) -> Path:
    """The interpreter of a cached venv with ``requirement`` and Django 5.2, built with ``base_python`` if missing.

    The venv is ``<cache>/<name>-django5.2-pyX.Y``; ``check`` is Python code that must run in it (it asserts
    the package's version). The database drivers of ``vendors`` are added when missing. A file lock keeps two
    runs (or a run and the test suite, for 2.3.2) from building the same venv at once.
    """
    version = _python_version(base_python)
    venv = cache_dir() / f"{name}-django{LEGACY_DJANGO}-py{version}"
    python = venv / "bin" / "python"
    check = f"import django\n{check}assert django.get_version().startswith({LEGACY_DJANGO + '.'!r})\n"
    drivers = [DRIVER_PACKAGES[v] for v in vendors if v in DRIVER_PACKAGES]
    full_check = check + "".join(f"import {module}\n" for _, module in drivers)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:  # for 2.3.2, the same lock as the test suite's
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _runs(python, full_check):
            return python
        if not _runs(python, check):
            print(f"building {venv} ({requirement} from PyPI)...", file=sys.stderr)
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([base_python, "-m", "venv", str(venv)], check=True, env=_clean_env())
            django = f"Django>={LEGACY_DJANGO},<{LEGACY_DJANGO[:2]}{int(LEGACY_DJANGO[2:]) + 1}"
            _pip(python, [requirement, django])
        missing = [package for package, module in drivers if not _runs(python, f"import {module}")]
        if missing:
            _pip(python, missing)
        if not _runs(python, full_check):
            raise BenchError(f"{venv} does not provide {requirement} with the drivers needed")
    return python


def _pip(python: Path, requirements: list[str]) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True, env=_clean_env()
    )
    if result.returncode:
        raise BenchError(f"pip install {' '.join(requirements)} failed:\n{result.stdout}{result.stderr}")


@dataclass
class Side:
    key: str  # "ours" or "legacy": file names, JSON keys
    label: str  # what the table shows
    python: Path
    workdir: Path
    pythonpath: list[str]
    expect_mailer_dir: str | None
    info: dict = field(default_factory=dict)

    @classmethod
    def create(
        cls, key, label, python, workdir: Path, pythonpath, expect_mailer_dir, sources=("child.py", "bench_settings.py")
    ) -> Side:
        """``sources``: the files copied as ``child.py`` and ``bench_settings.py`` (another package's pair)."""
        workdir.mkdir(parents=True)
        for source, name in zip(sources, ("child.py", "bench_settings.py"), strict=True):
            shutil.copyfile(HERE / source, workdir / name)
        return cls(key, label, Path(python), workdir, [str(workdir), *pythonpath], expect_mailer_dir)

    def env(self, config: dict, profile: str | None = None) -> dict[str, str]:
        env = _clean_env()
        env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        env["DJANGO_SETTINGS_MODULE"] = "bench_settings"
        env["BENCH_CONFIG"] = json.dumps(config)
        if self.expect_mailer_dir:
            env["BENCH_EXPECT_MAILER_DIR"] = self.expect_mailer_dir
        if profile:
            env["BENCH_PROFILE"] = profile
        return env

    def start(self, action: str, params: dict, config: dict, profile: str | None = None) -> Child:
        return Child(self, action, params, config, profile)

    def run(self, action: str, params: dict, config: dict, timeout: float = 3600, profile: str | None = None) -> dict:
        return self.start(action, params, config, profile).finish(timeout)


class Child:
    """A running ``child.py``: its stdout lines arrive on a queue; its exit is reaped with ``wait4`` for its rusage."""

    def __init__(self, side: Side, action: str, params: dict, config: dict, profile: str | None) -> None:
        self.side = side
        self.action = action
        self.stderr_path = side.workdir / f"stderr-{action}-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "w+")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(side.python), str(side.workdir / "child.py"), action, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=side.workdir,
            env=side.env(config, profile),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.result: dict | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # A blocking wait4() in a thread, rather than polling: the benchmark process also runs the SMTP sink.
        self._exit: tuple[int, float, object] | None = None
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        # Only this thread reaps the child: signals go through os.kill(), not Popen (whose poll() would reap it).
        _, status, rusage = os.wait4(self.proc.pid, 0)
        self._exit = (status, time.perf_counter(), rusage)

    def _signal(self, signum: int) -> None:
        if self._exit is None:
            try:
                os.kill(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT ") :])
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, tag: str, timeout: float = 120) -> None:
        """Wait for the child to print the line ``tag`` (``READY``, ``WARM``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise BenchError(f"{self.side.label} {self.action}: no {tag} within {timeout}s") from None
            if line is None:
                self._reap(5)
                raise BenchError(f"{self.side.label} {self.action} exited before {tag}:\n{self.stderr_tail()}")
            if line == tag:
                return

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stderr_tail(self, lines: int = 25) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def _reap(self, timeout: float, kill_on_timeout: bool = True) -> tuple[int, float, int]:
        """Wait for the exit: (exit code, wall seconds, peak RSS in KiB from the child's own rusage)."""
        self._waiter.join(timeout)
        if self._exit is None:
            if kill_on_timeout:
                self.kill()
            raise BenchError(f"{self.side.label} {self.action} did not finish within {timeout}s")
        status, ended, rusage = self._exit
        self.wall = ended - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._reader.join(10)
        self._stderr.close()
        self.maxrss_kib = rusage.ru_maxrss  # KiB on Linux
        self.cpu = rusage.ru_utime + rusage.ru_stime
        return self.proc.returncode, self.wall, self.maxrss_kib

    def finish(self, timeout: float = 3600) -> dict:
        code, wall, maxrss = self._reap(timeout)
        if code != 0 or self.result is None:
            raise BenchError(f"{self.side.label} {self.action} failed (exit {code}):\n{self.stderr_tail()}")
        return {**self.result, "wall": wall, "maxrss_kib": maxrss, "cpu": self.cpu}

    def interrupt(self, timeout: float = 15) -> int:
        """Stop a long-running command with SIGINT (both packages handle it), SIGKILL after ``timeout``."""
        if self._exit is None:
            self._signal(signal.SIGINT)
            try:
                code, _, _ = self._reap(timeout)
            except BenchError:
                return -9
            return code
        return self.proc.returncode

    def kill(self) -> None:
        if self._exit is None:
            self._signal(signal.SIGKILL)
            try:
                self._reap(10, kill_on_timeout=False)
            except (BenchError, ChildProcessError):
                pass
