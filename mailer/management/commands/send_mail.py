import logging

from django.core.management.base import CommandError

from mailer.conf import mailer_settings
from mailer.heartbeats import Heartbeat
from mailer.management.base import MailerCommand
from mailer.management.options import add_deprecated_cron_option, warn_if_cron
from mailer.management.progress import ProgressBar
from mailer.models import Message
from mailer.reading import QueueNotDecodable
from mailer.runs import HeldBack, send_once
from mailer.sender_models import SenderKind

logger = logging.getLogger(__name__)


class Command(MailerCommand):
    help = (
        "Do one pass through the mail queue, attempting to send all mail. "
        "Shows a progress bar when standard error is a terminal."
    )

    def add_arguments(self, parser):
        add_deprecated_cron_option(parser)

    def handle(self, *args, **options):
        warn_if_cron("send_mail", options)
        try:
            with Heartbeat(SenderKind.SEND_MAIL) as heartbeat:  # this run's row in mailer_status
                result = send_once(
                    progress=self.progress_bar,
                    log=logger,
                    on_message=self.output.on_message,
                    on_commit=heartbeat.committed,
                )
        except HeldBack as exc:
            self.output.pass_done(exc.result)
            # Exit non-zero: mail is waiting that this sender cannot send (see the errors logged).
            raise CommandError(str(exc)) from exc
        except QueueNotDecodable as exc:
            # Exit non-zero: mail is waiting that this sender cannot send (see the errors logged).
            raise CommandError(str(exc)) from exc
        # Exit 0 also when mail was deferred or failed, as django-mailer 2.x did: cron mails nobody for it.
        self.output.pass_done(result)

    def progress_bar(self):
        """A bar on standard error when it is a terminal (never under cron), sized with one COUNT query."""
        if not self.stderr.isatty():
            return None
        total = Message.objects.due().count()
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
