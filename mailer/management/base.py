"""The frame of django-mailer's commands (:class:`MailerCommand`), and of the long-running senders.

The long-running senders (``runmailer``, ``runmailer_pg``) share :class:`SenderCommand`.

Each makes a sender: an object whose ``run()`` sends until its ``stop()`` is called (from the
``SIGINT``/``SIGTERM`` handler) and returns the exit status. Around it the frame adds ``--debug``,
the command's system checks, the start banner, the run's totals logged as one ``Stopped: ...`` line
on the command's own logger however the run ends, and the signal handlers put back afterwards.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from mailer import staging, tables
from mailer.checks import run_command_checks
from mailer.heartbeats import Heartbeat
from mailer.management.output import CommandOutput
from mailer.management.progress import RunTotals
from mailer.runs import signals_handled
from mailer.summaries import MessageReport, SendResult


class Sender(Protocol):
    def run(self) -> int: ...

    def stop(self, *args: Any) -> None: ...


class MailerCommand(BaseCommand):
    """A django-mailer command: its own output when the project logs nothing of django-mailer's
    (:mod:`mailer.management.output`), and a missing table said as an error, not a traceback."""

    output: CommandOutput

    def execute(self, *args: Any, **options: Any) -> Any:
        self.verbosity = options.get("verbosity", 1)
        with CommandOutput(self, self.verbosity) as self.output:
            try:
                with tables.needed():
                    return super().execute(*args, **options)
            except ImproperlyConfigured as exc:
                # Missing tables (TablesMissing), a backend that cannot be imported...: what to fix, in one line.
                raise CommandError(str(exc)) from exc


class SenderCommand(MailerCommand):
    """A command that sends until a signal stops it. Subclasses set the attributes and :meth:`make_sender`."""

    command_name: str  # whose checks run (see mailer.checks.run_command_checks)
    logger: logging.Logger  # where the "Stopped: ..." line goes: the command's own logger
    banner: str  # the second line printed on start, after the date

    def add_arguments(self, parser):
        parser.add_argument("--debug", action="store_true", help="Log django-mailer's DEBUG messages.")

    heartbeat: Heartbeat  # this process's row in mailer_status (mailer.heartbeats), made before make_sender()

    def make_sender(
        self, on_pass: Callable[[SendResult], None], on_message: Callable[[MessageReport], None] | None
    ) -> Sender:
        """The sender to run, calling ``on_pass`` with the result of each pass and ``on_message`` (if not None)
        with what became of each message; raise CommandError if none. Hand ``self.heartbeat.committed`` to
        the engine as ``on_commit`` for the heartbeat to count a long pass's messages as they are sent."""
        raise NotImplementedError

    def stopped(self, status: int) -> None:
        """After the run and its ``Stopped: ...`` line: exit with a non-zero ``status``."""
        if status:
            sys.exit(status)

    def handle(self, *args, **options):
        if options["debug"]:
            logging.getLogger("mailer").setLevel(logging.DEBUG)
        for warning in run_command_checks(self.command_name):  # errors raise SystemCheckError
            self.stderr.write(str(warning))
        totals = RunTotals()
        heartbeat = self.heartbeat = Heartbeat(self.command_name)

        def on_pass(result: SendResult) -> None:
            totals.add(result)
            heartbeat.passed(result)
            self.output.pass_done(result)

        sender = self.make_sender(on_pass, self.output.on_message)
        # SIGTERM (systemd, supervisors) and CONTROL-C stop the run, with everything sent so far
        # recorded; a delivery blocked on a relay is cut short and its message left queued.
        with signals_handled(sender.stop, signal.SIGINT, signal.SIGTERM), heartbeat:
            try:
                if options["verbosity"] >= 1:
                    self.stdout.write(f"{timezone.now():%B %d, %Y - %X}")
                    self.stdout.write(self.banner)
                    notice = staging.notice()
                    if notice is not None:
                        self.stdout.write(self.style.WARNING(notice))
                    self.stdout.flush()
                status = sender.run()
            finally:
                # Whatever ended the run (a signal, a configuration error, the sending thread's death).
                self.logger.info("Stopped: %s", totals)
        self.stopped(status)
