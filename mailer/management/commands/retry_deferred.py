import logging
import time

from django.db import router

from mailer import drain_hook
from mailer.management.base import MailerCommand
from mailer.management.options import add_deprecated_cron_option, warn_if_cron
from mailer.models import Message

logger = logging.getLogger(__name__)


class Command(MailerCommand):
    help = "Put deferred mail back on the queue, to be attempted by the next send_mail."

    def add_arguments(self, parser):
        add_deprecated_cron_option(parser)

    def handle(self, *args, **options):
        warn_if_cron("retry_deferred", options)
        started = time.monotonic()
        count = Message.objects.retry_deferred()
        if count:
            drain_hook.queued(None, router.db_for_write(Message))  # MAILER_DRAIN_TASKS's chains, if they ended
        kept = Message.objects.retries_used_up().count()
        logger.info(
            "%s message(s) retried, %s left deferred (MAILER_EMAIL_MAX_RETRIES) in %.2fs",
            count,
            kept,
            time.monotonic() - started,
        )
