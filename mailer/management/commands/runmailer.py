import logging
import signal
import threading

from django.core.management.base import BaseCommand
from django.utils import timezone

from mailer import smtp
from mailer.checks import run_command_checks
from mailer.engine import send_loop
from mailer.management.progress import RunTotals

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Send mail continuously: a pass whenever the queue is not empty, else a nap of MAILER_EMPTY_QUEUE_SLEEP."

    def add_arguments(self, parser):
        parser.add_argument("--debug", action="store_true", help="Log django-mailer's DEBUG messages.")

    def handle(self, *args, **options):
        if options["debug"]:
            logging.getLogger("mailer").setLevel(logging.DEBUG)
        for warning in run_command_checks("runmailer"):  # errors raise SystemCheckError
            self.stderr.write(str(warning))
        # SIGTERM (systemd, supervisors) and CONTROL-C stop the loop, with everything sent so far
        # recorded; a delivery blocked on a relay is cut short and its message left queued.
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()
            smtp.interrupt_soon()

        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, on_signal) for signum in signals}
        totals = RunTotals()
        try:
            self.stdout.write(f"{timezone.now():%B %d, %Y - %X}")
            self.stdout.write("Starting django-mailer send loop. Quit with CONTROL-C.")
            self.stdout.flush()
            send_loop(stop=stop, on_pass=totals.add)
        finally:
            # Whatever ended the run (a signal, a configuration error): what it did, in one line.
            logger.info("Stopped: %s", totals)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stdout.write("Stopped.")
