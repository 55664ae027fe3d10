from django.core.management.base import BaseCommand

from mailer.models import Message, MessageLog
from mailer.searchfill import fill


class Command(BaseCommand):
    help = (
        "Fill the search columns of queued and logged mail written before migration 0016 (or by django-mailer "
        "2.x), so that the admin's search finds it. Safe to stop and run again, and to run while mail is sent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Rows decoded and written per transaction (default 1000)."
        )

    def handle(self, *args, batch_size: int, **options):
        for model in (Message, MessageLog):
            count = fill(model, batch_size=batch_size)
            if options["verbosity"] >= 1:
                self.stdout.write(f"{model._meta.verbose_name_plural}: {count} row(s) filled")
