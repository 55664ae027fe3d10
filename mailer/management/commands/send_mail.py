import logging

from django.core.management.base import BaseCommand

from mailer.conf import mailer_settings
from mailer.engine import send_all
from mailer.management.options import add_deprecated_cron_option, warn_if_cron

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Do one pass through the mail queue, attempting to send all mail."

    def add_arguments(self, parser):
        add_deprecated_cron_option(parser)

    def handle(self, *args, **options):
        warn_if_cron("send_mail", options)
        if mailer_settings.PAUSE_SEND:
            logger.info("sending is paused (MAILER_PAUSE_SEND), quitting.")
            return
        send_all()  # Logs its own one-line summary.
