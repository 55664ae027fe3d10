"""A sending run as the commands make it: what ``send_mail`` does around :func:`~mailer.engine.send_all`.

:func:`send_once` is ``manage.py send_mail`` without the command line: it honours
``MAILER_PAUSE_SEND``, stops cleanly on ``SIGTERM``, logs the run's ``Sent: ...`` line
exactly once however the run ends, and fails when mail this process cannot decode was left queued.
:func:`signals_handled` is how the commands stop on a signal.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from mailer import smtp, staging
from mailer.conf import mailer_settings
from mailer.engine import send_all
from mailer.summaries import MessageReport, SendResult, log_lock_held, log_sent

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, Any], Any]


class HeldBack(Exception):
    """A pass left intact messages queued that this process cannot decode; ``result`` is what it did.

    The sender's configuration or code differs from that of the process that queued them
    (``SECRET_KEY``, a class not deployed yet); the errors logged say which. Raised after the pass
    is committed and logged.
    """

    def __init__(self, result: SendResult) -> None:
        super().__init__(f"{result.held} message(s) held back: this process cannot decode them (see the errors above)")
        self.result = result


@contextmanager
def signals_handled(handler: SignalHandler, *signums: int) -> Iterator[None]:
    """Call ``handler`` on each of ``signums`` while the block runs; the previous handlers afterwards.

    Python runs signal handlers in the main thread only, so only the main thread can do this.
    """
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class Progress(Protocol):
    """What shows a pass's progress (``send_mail``'s bar): called with the counts so far, then closed."""

    def __call__(self, result: SendResult) -> None: ...

    def close(self) -> None: ...


def send_once(
    *,
    progress: Callable[[], Progress | None] | None = None,
    stop_on_sigterm: bool = True,
    log: logging.Logger = logger,
    on_message: Callable[[MessageReport], None] | None = None,
    on_commit: Callable[[SendResult], None] | None = None,
) -> SendResult | None:
    """One pass over the queue, as ``manage.py send_mail`` makes it; what it did, or None if it sent nothing.

    * With ``MAILER_PAUSE_SEND`` on, it logs so and returns None.
    * When another run holds the file lock, it logs the ``Sent: nothing ...`` line and returns None
      (:func:`~mailer.engine.send_all` has logged why at the ERROR level).
    * ``SIGTERM`` ends the pass (with ``stop_on_sigterm``, which needs the main thread): what was sent is
      recorded, a delivery blocked on a relay is cut short and its message left queued, the lock released.
    * An exception from the pass is re-raised after the line with the counts committed before it and the
      exception. :class:`~mailer.reading.QueueNotDecodable` is one.
    * When intact messages were left queued because this process cannot decode them, it raises
      :class:`HeldBack` after the pass's own line.

    ``progress``, if given, makes the progress display when the run starts (it may return None for
    none); the display is closed before the run's last line. The lines that are not the engine's go to
    ``log`` (``send_mail`` passes its own logger). ``on_message`` goes to :func:`~mailer.engine.send_all`;
    ``on_commit``, if given, is called as there (with the pass's counts after each of its commits).
    """
    if mailer_settings.PAUSE_SEND:
        log.info("sending is paused (MAILER_PAUSE_SEND), quitting.")
        return None
    notice = staging.notice()
    if notice is not None:
        log.info("%s", notice)  # at INFO: send_mail runs from cron, which mails what it prints
    started = time.monotonic()
    so_far = SendResult()  # the counts committed before an exception, which send_all() does not summarize

    def committed(result: SendResult) -> None:
        nonlocal so_far
        so_far = result
        if on_commit is not None:
            on_commit(result)

    stop = threading.Event()  # only SIGTERM sets it

    def on_sigterm(signum: int, frame: Any) -> None:
        stop.set()
        smtp.interrupt_soon()

    display = None
    with signals_handled(on_sigterm, *((signal.SIGTERM,) if stop_on_sigterm else ())):
        try:
            display = progress() if progress is not None else None
            result = send_all(progress=display, on_commit=committed, stop=stop, on_message=on_message)
        except BaseException as exc:
            if display is not None:
                display.close()
            so_far.seconds = time.monotonic() - started
            log_sent(log, so_far, stopped_by=exc)
            raise
    if display is not None:
        display.close()
    if stop.is_set():
        log.info("stopped by SIGTERM; the mail not sent yet stays queued")
    if result is None:
        # Said once, as a run that went through says what it did.
        log_lock_held(log, time.monotonic() - started)
    elif result.held:
        raise HeldBack(result)
    return result
