"""What the sending commands print themselves, on top of (or instead of) the project's logging.

A project that configured no ``LOGGING`` for django-mailer used to see only what Python's last-resort
handler prints: a warning per message that went wrong, or nothing at all. For such a project the
commands now print their own lines (with ``LOGGING`` that handles the ``mailer`` loggers, the project's
configuration alone decides, so that nothing is printed twice):

* ``-v 1`` (the default): one warning line on standard error for a pass that deferred or failed
  anything, with the counts and the first error; errors as they happen; nothing on standard output.
* ``-v 0``: errors only.
* ``-v 2`` and ``-v 3``: also one line per message on standard output (result, recipient, subject,
  reason), the summary of every pass, and django-mailer's other ``INFO`` lines on standard error.

Whatever the logging, ``-v 2`` prints the line per message.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand

from mailer.logtext import loggable
from mailer.summaries import MessageReport, SendResult

MAILER_LOGGER = "mailer"


def project_logs_mailer() -> bool:
    """Does the project's logging handle the ``mailer`` loggers' records (a handler on them or an ancestor)?"""
    return logging.getLogger(MAILER_LOGGER).hasHandlers()


def _plain(text: str) -> str:
    return text  # OutputWrapper's stderr would otherwise style the line as an error


def _not_said_otherwise(record: logging.LogRecord) -> bool:
    """Leave out, below ERROR, what the command's own lines say: the summary, and what each message became."""
    if record.levelno >= logging.ERROR:
        return True
    return not getattr(record, "mailer_per_message", False) and not getattr(record, "mailer_summary", False)


class _CommandHandler(logging.StreamHandler):
    """django-mailer's log records on the command's standard error, in its styles.

    A stream handler on that stream, so that ``send_mail``'s progress bar wipes itself before each line.
    """

    def __init__(self, command: BaseCommand, level: int) -> None:
        super().__init__(command.stderr)
        self.setLevel(level)
        self.command = command
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(_not_said_otherwise)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = self.command.style
            style_func = style.ERROR if record.levelno >= logging.ERROR else style.WARNING
            if record.levelno < logging.WARNING:
                style_func = _plain
            self.command.stderr.write(self.format(record), style_func=style_func)
            self.command.stderr.flush()
        except Exception:
            self.handleError(record)


class CommandOutput:
    """A context manager for a command's run: installs the command's own output when it is needed.

    Call :meth:`pass_done` with the result of each pass; hand :attr:`on_message` to the engine.
    """

    def __init__(self, command: BaseCommand, verbosity: int) -> None:
        self.command = command
        self.verbosity = verbosity
        self.handler: _CommandHandler | None = None
        self.level = logging.NOTSET  # the mailer logger's own level, put back on the way out

    def __enter__(self) -> CommandOutput:
        if not project_logs_mailer():
            level = {0: logging.ERROR, 1: logging.WARNING}.get(self.verbosity, logging.INFO)
            self.handler = _CommandHandler(self.command, level)
            logger = logging.getLogger(MAILER_LOGGER)
            logger.addHandler(self.handler)
            self.level = logger.level
            if logger.getEffectiveLevel() > level:  # Python's default: WARNING, inherited from the root logger
                logger.setLevel(level)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handler is not None:
            logger = logging.getLogger(MAILER_LOGGER)
            logger.removeHandler(self.handler)
            logger.setLevel(self.level)
            self.handler = None

    @property
    def on_message(self) -> Any:
        """The engine's ``on_message`` callback: one line per message with ``-v 2``; None otherwise."""
        return self.message if self.verbosity >= 2 else None

    def message(self, report: MessageReport) -> None:
        self.command.stdout.write(str(report))
        self.command.stdout.flush()

    def pass_done(self, result: SendResult | None) -> None:
        """Print the summary of a pass, if the command prints its own lines: when it went wrong, or at ``-v 2``."""
        if result is None or self.handler is None or self.verbosity < 1:
            return
        line = f"Sent: {result}"
        if result.first_error:
            line = f"{line}; first error: {loggable(result.first_error)}"
        if result.troubled:
            self.command.stderr.write(line, style_func=self.command.style.WARNING)
            self.command.stderr.flush()
        elif self.verbosity >= 2:
            self.command.stderr.write(line, style_func=_plain)
            self.command.stderr.flush()
