import logging

from django.core.management.base import BaseCommand

from mailer.management.options import add_deprecated_cron_option, warn_if_cron
from mailer.models import Message

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Put deferred mail back on the queue, to be attempted by the next send_mail."

    def add_arguments(self, parser):
        add_deprecated_cron_option(parser)

    def handle(self, *args, **options):
        warn_if_cron("retry_deferred", options)
        count = Message.objects.retry_deferred()
        logger.info("%s message(s) retried", count)
