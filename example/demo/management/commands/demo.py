"""Queue a few messages the ways a project would, send them with ``send_mail``, and show what happened."""

from django.core import mail
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

import mailer
from mailer.models import PRIORITY_HIGH, DontSendEntry, Message, MessageLog

FROM = "demo@example.com"
BLOCKED = "unsubscribed@example.com"


class Command(BaseCommand):
    help = "Queue some demo mail, run send_mail, and print the queue and the log."

    def handle(self, *args, **options):
        last_log_id = MessageLog.objects.order_by("-id").values_list("id", flat=True).first() or 0

        self.section("Queueing")
        self.queue_messages()
        self.show_queue()

        self.section("manage.py send_mail")
        call_command("send_mail")

        self.section("Log of this run")
        for entry in MessageLog.objects.filter(id__gt=last_log_id).order_by("id"):
            self.stdout.write(f"  {entry.get_result_display():<12} {entry.subject!r:<42} {entry.message_id or '-'}")
        self.show_queue()

        # What monitoring sees (see README.rst for the cron lines and a health check).
        self.section("manage.py mailer_status")
        call_command("mailer_status")

    def queue_messages(self):
        # The queue is the default mailer (MAILERS, or EMAIL_BACKEND before 6.1): Django's mail API queues.
        mail.send_mail("Plain, via Django", "Hello from django.core.mail.send_mail.", FROM, ["alice@example.com"])
        html = mail.EmailMultiAlternatives(
            subject="HTML, via Django", body="Plain text part.", from_email=FROM, to=["bob@example.com"]
        )
        html.attach_alternative("<p>The <b>HTML</b> part.</p>", "text/html")
        html.send()
        attached = mail.EmailMessage(
            subject="With an attachment", body="See notes.txt.", from_email=FROM, to=["carol@example.com"]
        )
        attached.attach("notes.txt", "Queued by django-mailer.\n", "text/plain")
        attached.send()

        # mailer's own functions add a priority and an HTML helper.
        mailer.send_mail(
            "Urgent, via mailer", "Sent before the others.", FROM, ["dave@example.com"], priority=PRIORITY_HIGH
        )
        mailer.send_html_mail("HTML, via mailer", "Plain text part.", "<h1>Hi</h1>", FROM, ["erin@example.com"])

        # Addresses on the don't-send list are dropped; a message left with no recipient is not sent.
        DontSendEntry.objects.get_or_create(to_address=BLOCKED, defaults={"when_added": timezone.now()})
        mailer.send_mail("To an unsubscribed address", "Never delivered.", FROM, [BLOCKED])

    def show_queue(self):
        counts = {
            "high": Message.objects.high_priority().count(),
            "medium": Message.objects.medium_priority().count(),
            "low": Message.objects.low_priority().count(),
            "deferred": Message.objects.deferred().count(),
        }
        self.stdout.write("  queue: " + ", ".join(f"{name} {n}" for name, n in counts.items()))

    def section(self, title):
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n== {title}"))
