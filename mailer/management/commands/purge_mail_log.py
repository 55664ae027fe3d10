import argparse
import logging
import time

from mailer.choices import Result
from mailer.management.base import MailerCommand
from mailer.management.options import non_negative_int
from mailer.managers import PURGE_RESULTS
from mailer.models import MessageLog

logger = logging.getLogger(__name__)

# What --result accepts, and the results each choice deletes.
RESULTS = PURGE_RESULTS

# 365,000 days (about 1,000 years) back from now is still after the year 1000, the lowest date every
# supported database compares reliably; a larger DAYS used to end in an OverflowError traceback.
MAX_DAYS = 365_000


def days_argument(value: str) -> int:
    """DAYS as a whole number from 0 to ``MAX_DAYS``; anything else is a usage error saying the range."""
    days = non_negative_int(value)
    if days > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{value} is too large: DAYS must be between 0 and {MAX_DAYS}")
    return days


class Command(MailerCommand):
    help = "Delete mail log entries older than DAYS days (by default only those of sent mail)."

    def add_arguments(self, parser):
        parser.add_argument(
            "days", type=days_argument, help=f"Age in days of the oldest entry to keep (0 to {MAX_DAYS})."
        )
        parser.add_argument(
            "-r",
            "--result",
            choices=list(RESULTS),
            default=Result.SUCCESS.word,
            help="Which entries to delete: success (the default), failure or all.",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        days = options["days"]
        deleted = MessageLog.objects.purge(days, options["result"])
        logger.info(
            "%s log entries deleted (%s) older than %s day(s) in %.2fs",
            sum(deleted.values()),
            ", ".join(f"{code.word} {count}" for code, count in deleted.items()),
            days,
            time.monotonic() - started,
        )
