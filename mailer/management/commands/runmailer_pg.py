import logging

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from mailer.management.base import SenderCommand

logger = logging.getLogger(__name__)


class Command(SenderCommand):
    help = (
        "Send mail as soon as it is committed, using PostgreSQL's LISTEN/NOTIFY, "
        "plus a pass every MAILER_EMPTY_QUEUE_SLEEP seconds."
    )
    command_name = "runmailer_pg"
    logger = logger
    banner = "Starting django-mailer send loop (PostgreSQL LISTEN/NOTIFY). Quit with CONTROL-C."

    def make_sender(self, on_pass, on_message):
        from mailer.postgres import PostgresSender

        try:
            return PostgresSender(on_pass=on_pass, on_message=on_message, on_commit=self.heartbeat.committed)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
