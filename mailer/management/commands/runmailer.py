import logging

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
        try:
            # Inside the try: a CONTROL-C that comes as the banner is printed is a clean stop too.
            self.stdout.write(f"{timezone.now():%B %d, %Y - %X}")
            self.stdout.write("Starting django-mailer send loop. Quit with CONTROL-C.")
            send_loop()
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
