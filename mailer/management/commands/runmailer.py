import logging
import signal
import threading

from django.core.management.base import BaseCommand
from django.utils import timezone

from mailer.engine import send_loop


class Command(BaseCommand):
    help = "Send mail continuously: a pass whenever the queue is not empty, else a nap of MAILER_EMPTY_QUEUE_SLEEP."

    def add_arguments(self, parser):
        parser.add_argument("--debug", action="store_true", help="Log django-mailer's DEBUG messages.")

    def handle(self, *args, **options):
        if options["debug"]:
            logging.getLogger("mailer").setLevel(logging.DEBUG)
        # SIGTERM (systemd, supervisors) and CONTROL-C stop the loop after the
        # message in hand, with everything sent so far recorded.
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *args: stop.set())
        self.stdout.write(f"{timezone.now():%B %d, %Y - %X}")
        self.stdout.write("Starting django-mailer send loop. Quit with CONTROL-C.")
        self.stdout.flush()
        send_loop(stop=stop)
        self.stdout.write("Stopped.")
