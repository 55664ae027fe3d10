"""What the sending commands show and log about their passes, kept out of :mod:`mailer.engine`.

* :class:`ProgressBar`: ``send_mail``'s bar on a terminal, fed by :func:`mailer.engine.send_all`'s
  ``progress`` callback.
* :class:`RunTotals`: the totals of a long-running sender (``runmailer``, ``runmailer_pg``), fed with
  the result of each pass (``on_pass`` of :func:`mailer.engine.send_loop` and of the PostgreSQL sender).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import IO

from mailer.summaries import SendResult


def _same_file(a: object, b: object) -> bool:
    """Do the streams ``a`` and ``b`` write to the same file (the same terminal)?"""
    try:
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _stream_handlers_on(stream: IO[str]) -> list[logging.Handler]:
    """The logging handlers that write to the same file as ``stream``, wherever they are attached."""
    loggers = [logging.getLogger()]
    loggers += [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    candidates = [handler for logger in loggers for handler in logger.handlers]
    if logging.lastResort is not None:  # what prints warnings when no handler is configured
        candidates.append(logging.lastResort)
    found: list[logging.Handler] = []
    for handler in candidates:
        if handler in found or not isinstance(handler, logging.StreamHandler):
            continue
        # The same file, or any terminal: the file test can fail on a wrapped stream (Django 4.2), and wiping
        # the bar before a line on another terminal costs nothing.
        if handler.stream is stream or _same_file(handler.stream, stream) or _is_terminal(handler.stream):
            found.append(handler)
    return found


class _ClearBarFirst(logging.Filter):
    """Attached to a handler that writes to the bar's terminal: wipes the bar before each line it prints."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        self.bar.clear()
        return True


class ProgressBar:
    """``sent 120/500 [=====>    ] 24%`` on a terminal, redrawn in place with ``\\r``.

    Call it with each :class:`SendResult` of the pass (it is :func:`~mailer.engine.send_all`'s
    ``progress`` callback), then :meth:`close` it, which draws the final state and ends the line.
    ``total`` is what the pass is expected to handle; messages queued during the pass raise it.
    The bar and the percentage count every message dealt with (sent, deferred, skipped or failed);
    the others are named after the percentage when there are any.

    While it is open, log lines printed on the same terminal first wipe the bar; it is drawn again
    below them on the next update, so it stays the last line. Redraws are at most ``interval``
    seconds apart, except the last one.
    """

    def __init__(
        self,
        stream: IO[str],
        total: int,
        *,
        width: int = 30,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.width = width
        self.interval = interval
        self.clock = clock
        self.result = SendResult()
        self.shown = ""  # the text on the terminal now ("" when wiped)
        self.drawn = False  # drawn at least once: close() ends the line
        self.last_draw: float | None = None
        self.closed = False
        self.hooked = [(handler, _ClearBarFirst(self)) for handler in _stream_handlers_on(stream)]
        for handler, wiper in self.hooked:
            handler.addFilter(wiper)

    @staticmethod
    def handled(result: SendResult) -> int:
        return result.sent + result.deferred + result.skipped + result.failed

    def render(self, result: SendResult) -> str:
        done = self.handled(result)
        total = max(self.total, done)
        if total:
            filled = self.width * done // total
            percent = 100 * done // total
        else:
            filled, percent = self.width, 100
        if filled >= self.width:
            bar = "=" * self.width
        elif filled:
            bar = "=" * (filled - 1) + ">" + " " * (self.width - filled)
        else:
            bar = " " * self.width
        text = f"sent {result.sent}/{total} [{bar}] {percent:3d}%"
        if done != result.sent:
            text += f" (deferred {result.deferred}, skipped {result.skipped}, failed {result.failed})"
        return text

    def __call__(self, result: SendResult) -> None:
        if self.closed:
            return
        self.result = result
        now = self.clock()
        due = self.last_draw is None or now - self.last_draw >= self.interval or not self.shown
        if due or self.handled(result) >= self.total:
            self.draw()

    def draw(self) -> None:
        text = self.render(self.result)
        padding = " " * max(0, len(self.shown) - len(text))
        self.stream.write(f"\r{text}{padding}")
        self.stream.flush()
        self.shown = text
        self.drawn = True
        self.last_draw = self.clock()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * len(self.shown) + "\r")
            self.stream.flush()
            self.shown = ""

    def close(self) -> None:
        """Draw the final state (if anything was drawn) and end the line. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for handler, wiper in self.hooked:
            handler.removeFilter(wiper)
        if self.drawn:
            if self.shown != self.render(self.result):  # wiped by a log line, or a skipped redraw
                self.draw()
            self.stream.write("\n")
            self.stream.flush()


class RunTotals:
    """What the passes of one long run did, added up: passes, sent, deferred, skipped, failed, seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.passes = 0
        self.total = SendResult()
        self.lock = threading.Lock()  # runmailer_pg's passes run in another thread

    def add(self, result: SendResult) -> None:
        with self.lock:
            self.passes += 1
            self.total.sent += result.sent
            self.total.deferred += result.deferred
            self.total.skipped += result.skipped
            self.total.failed += result.failed

    def __str__(self) -> str:
        with self.lock:
            total, passes = self.total, self.passes
            return (
                f"{passes} pass{'' if passes == 1 else 'es'}, sent {total.sent}, deferred {total.deferred}, "
                f"skipped {total.skipped}, failed {total.failed} in {self.clock() - self.started:.2f}s"
            )
