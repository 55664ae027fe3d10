import logging
import signal
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from mailer.checks import run_command_checks
from mailer.management.progress import RunTotals

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Send mail as soon as it is committed, using PostgreSQL's LISTEN/NOTIFY, "
        "plus a pass every MAILER_EMPTY_QUEUE_SLEEP seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--debug", action="store_true", help="Log django-mailer's DEBUG messages.")

    def handle(self, *args, **options):
        from mailer.postgres import PostgresSender

        if options["debug"]:
            logging.getLogger("mailer").setLevel(logging.DEBUG)
        for warning in run_command_checks("runmailer_pg"):  # errors raise SystemCheckError
            self.stderr.write(str(warning))
        totals = RunTotals()
        try:
            sender = PostgresSender(on_pass=totals.add)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        previous = {signum: signal.signal(signum, sender.stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.stdout.write(f"{timezone.now():%B %d, %Y - %X}")
            self.stdout.write("Starting django-mailer send loop (PostgreSQL LISTEN/NOTIFY). Quit with CONTROL-C.")
            self.stdout.flush()
            status = sender.run()
        finally:
            # Also when the sending thread died (status 1) or the trigger could not be installed.
            logger.info("Stopped: %s", totals)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if status:
            sys.exit(status)
