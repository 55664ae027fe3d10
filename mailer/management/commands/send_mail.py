import logging
import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError

from mailer import smtp
from mailer.conf import mailer_settings
from mailer.engine import QueueNotDecodable, SendResult, send_all
from mailer.locking import lock_path
from mailer.management.options import add_deprecated_cron_option, warn_if_cron
from mailer.management.progress import ProgressBar
from mailer.models import Message

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Do one pass through the mail queue, attempting to send all mail. "
        "Shows a progress bar when standard error is a terminal."
    )

    def add_arguments(self, parser):
        add_deprecated_cron_option(parser)

    def handle(self, *args, **options):
        warn_if_cron("send_mail", options)
        if mailer_settings.PAUSE_SEND:
            logger.info("sending is paused (MAILER_PAUSE_SEND), quitting.")
            return
        started = time.monotonic()
        so_far = SendResult()  # the counts committed before an exception, which send_all() does not summarize
        bar = None

        def progress(result):
            if bar is not None:
                bar(result)

        def committed(result):
            nonlocal so_far
            so_far = result

        # SIGTERM (a supervisor, a deploy, systemd's timer unit) ends the pass: what was sent is recorded,
        # a delivery blocked on a relay is cut short and its message left queued, the lock is released.
        stop = threading.Event()
        terminated = False

        def on_sigterm(signum, frame):
            nonlocal terminated
            terminated = True
            stop.set()
            smtp.interrupt_soon()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            bar = self.progress_bar()
            result = send_all(progress=progress, on_commit=committed, stop=stop)
        except BaseException as exc:
            if bar is not None:
                bar.close()
            so_far.seconds = time.monotonic() - started
            logger.info("Sent: %s, then stopped by %s", so_far, _describe(exc))
            if isinstance(exc, QueueNotDecodable):
                raise CommandError(str(exc)) from exc
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()
        if terminated:
            logger.info("stopped by SIGTERM; the mail not sent yet stays queued")
        if result is None:
            # send_all() logged why at the ERROR level; say what this run did, once, as a normal run does.
            logger.info(
                "Sent: nothing in %.2fs, another run holds the lock %s.lock",
                time.monotonic() - started,
                lock_path(),
            )
        # Otherwise send_all() logged the run's one-line summary on mailer.engine.
        elif result.held:
            # Exit non-zero: mail is waiting that this sender cannot send (see the errors logged).
            raise CommandError(
                f"{result.held} message(s) held back: this process cannot decode them (see the errors above)"
            )

    def progress_bar(self):
        """A bar on standard error when it is a terminal (never under cron), sized with one COUNT query."""
        if not self.stderr.isatty():
            return None
        total = Message.objects.non_deferred().count()
        if mailer_settings.EMAIL_MAX_BATCH is not None:
            total = min(total, mailer_settings.EMAIL_MAX_BATCH)
        return ProgressBar(_RawStream(self.stderr), total)


class _RawStream:
    """Django's stderr wrapper, without its (red) error style and its line ending: the bar's own stream."""

    def __init__(self, wrapper):
        self.wrapper = wrapper

    def write(self, text):
        self.wrapper.write(text, style_func=lambda text: text, ending="")

    def flush(self):
        self.wrapper.flush()

    def fileno(self):
        return self.wrapper.fileno()  # OutputWrapper hands other attributes to the stream it wraps


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
