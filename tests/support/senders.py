"""A sending command (``send_mail``, ``runmailer``, ``runmailer_pg``) of ``tests.project`` in a child process.

Its log (stderr) goes to a file that the test reads to see what it did, and prints when something goes
wrong; its standard output is a pipe (the banner of the long-running commands).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import REPO_ROOT, project_env
from tests.support.waiting import wait_until


class SenderProcess:
    """One child running ``command``; ``settings`` (JSON-able) go through ``MAILER_TEST_SETTINGS``.

    ``python``: the interpreter to run it with (a cached venv with another database driver, say); ``cwd``: its
    working directory (where the file lock is, unless ``MAILER_LOCK_PATH`` says otherwise); ``argv``: what
    follows the interpreter instead of ``-m django command`` (a task worker's command line, say);
    ``stdout_to_log``: standard output goes to the log too (for a child that prints and has no banner to read);
    ``popen``: further keywords for ``subprocess.Popen``.
    """

    def __init__(
        self,
        command: str,
        env: dict,
        log_path: Path,
        settings: dict | None = None,
        banner: bool = True,
        python: str = sys.executable,
        cwd: Path = REPO_ROOT,
        argv: list[str] | None = None,
        stdout_to_log: bool = False,
        **popen: object,
    ):
        env = dict(env)
        if settings:
            env["MAILER_TEST_SETTINGS"] = json.dumps(settings)
        self.command = command
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [python, *(argv or ["-m", "django", command])],
                env=project_env(env, cwd),
                cwd=cwd,
                stdout=log if stdout_to_log else subprocess.PIPE,
                stderr=log,
                text=True,
                **popen,
            )
        if banner:
            self.read_banner()

    def read_banner(self) -> None:
        """Wait for the banner the long-running commands print when they start (fails the test otherwise)."""
        lines = self.proc.stdout.readline() + self.proc.stdout.readline()
        assert "Starting django-mailer" in lines, f"{lines}\n{self.log()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 15) -> None:
        """Wait until the log holds ``text`` ``count`` times; fail the test if the child exits first."""

        def logged() -> bool:
            if self.log().count(text) >= count:
                return True
            if not self.alive():
                status = self.proc.returncode
                raise AssertionError(f"{self.command} exited ({status}) before logging {text!r}:\n{self.log()}")
            return False

        wait_until(
            logged,
            timeout,
            interval=0.02,
            message=lambda: f"{self.command} did not log {text!r} {count} time(s):\n{self.log()}",
        )

    def wait(self, timeout: float) -> int:
        """The exit status; fails the test (and kills the child) if it does not end within ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.command} did not end within {timeout}s:\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig``, wait for the exit status."""
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def running_senders(
    command: str, env: dict, log_dir: Path, count: int, settings: dict | None = None
) -> Iterator[list[SenderProcess]]:
    """``count`` children running ``command`` for the block, started together (each reads its banner once all
    are starting), then stopped with SIGTERM; each must exit with 0. Their logs' ends are printed."""
    children = []
    try:
        for n in range(count):
            log_path = log_dir / f"{command}-{n}.log"
            children.append(SenderProcess(command, env, log_path, settings=settings, banner=False))
        for child in children:
            child.read_banner()
        yield children
        for child in children:
            assert child.stop() == 0, child.log()
    finally:
        for n, child in enumerate(children):
            child.kill()
            print(f"--- {command} {n} (exit status {child.proc.returncode}) ---\n{child.log()[-10000:]}")
