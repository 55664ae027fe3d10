import logging
import signal
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone


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
        try:
            sender = PostgresSender()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        signal.signal(signal.SIGTERM, sender.stop)
        signal.signal(signal.SIGINT, sender.stop)
        self.stdout.write(f"{timezone.now():%B %d, %Y - %X}")
        self.stdout.write("Starting django-mailer send loop (PostgreSQL LISTEN/NOTIFY). Quit with CONTROL-C.")
        self.stdout.flush()
        status = sender.run()
        if status:
            sys.exit(status)
