import logging
import time

from django.core.management.base import BaseCommand

from mailer.management.options import non_negative_int
from mailer.models import RESULT_CODES, RESULT_DONT_SEND, RESULT_FAILURE, RESULT_SUCCESS, MessageLog

logger = logging.getLogger(__name__)

RESULTS = {
    "success": [RESULT_SUCCESS],
    "failure": [RESULT_FAILURE],
    "all": [RESULT_SUCCESS, RESULT_DONT_SEND, RESULT_FAILURE],
}
RESULT_LABELS = dict(RESULT_CODES)


class Command(BaseCommand):
    help = "Delete mail log entries older than DAYS days (by default only those of sent mail)."

    def add_arguments(self, parser):
        parser.add_argument("days", type=non_negative_int, help="Age in days of the oldest entry to keep.")
        parser.add_argument(
            "-r",
            "--result",
            choices=list(RESULTS),
            default="success",
            help="Which entries to delete: success (the default), failure or all.",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        days = options["days"]
        # One DELETE per result, so that the summary can say how many of each went.
        deleted = {code: MessageLog.objects.purge_old_entries(days, [code]) for code in RESULTS[options["result"]]}
        logger.info(
            "%s log entries deleted (%s) older than %s day(s) in %.2fs",
            sum(deleted.values()),
            ", ".join(f"{RESULT_LABELS[code]} {count}" for code, count in deleted.items()),
            days,
            time.monotonic() - started,
        )
