"""Queue a few messages the ways a project would, send them with ``send_mail``, and show what happened.

Unless ``EXAMPLE_SMTP_PORT`` names a server of yours, the mail goes to a small relay the demo runs on
127.0.0.1 (:mod:`demo.relay`), which refuses two recipients on purpose: one for good, one for now. The
demo runs ``send_mail`` as cron would, in a process of its own, and shows what an operator sees of it.
"""

import os
import subprocess
import sys

from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

import mailer
from demo.relay import Relay
from mailer.models import PRIORITY_HIGH, RESULT_FAILURE, DontSendEntry, Message, MessageLog

FROM = "demo@example.com"
BLOCKED = "unsubscribed@example.com"
NOBODY = "nobody@example.com"
BUSY = "busy@example.com"
# What the demo relay answers to these recipients: 5xx is for good (given up), 4xx for now (tried again).
REFUSE = {NOBODY: "550 5.1.1 No such user here", BUSY: "451 4.7.1 Greylisted, try again in a minute"}


class Command(BaseCommand):
    help = "Queue some demo mail, run send_mail, and print the queue and the log."

    def handle(self, *args, **options):
        last_log_id = MessageLog.objects.order_by("-id").values_list("id", flat=True).first() or 0

        self.section("Queueing")
        self.queue_messages()
        self.show_queue()

        self.section("manage.py send_mail")
        port = os.environ.get("EXAMPLE_SMTP_PORT")
        if port:
            self.send_mail(port)
        else:
            with Relay(REFUSE) as relay:
                self.send_mail(relay.port)
            for _sender, recipients, subject in relay.received:
                self.stdout.write(f"  the relay took {subject!r} for {', '.join(recipients)}")

        self.section("Log of this run (the admin's Message logs page shows the same)")
        for entry in MessageLog.objects.filter(id__gt=last_log_id).order_by("id"):
            self.stdout.write(f"  {entry.get_result_display():<12} {entry.subject!r:<44} {entry.message_id or '-'}")
            if entry.result == RESULT_FAILURE:
                for line in entry.log_message.splitlines():
                    self.stdout.write(f"  {'':<12} {line}")
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

        # Two the demo relay refuses: a mailbox that does not exist (given up), a greylisting server (retried).
        mailer.send_mail("To a mailbox that does not exist", "Bounced for good.", FROM, [NOBODY])
        mailer.send_mail("To a greylisting server", "Tried again later.", FROM, [BUSY])

    def send_mail(self, port):
        """``manage.py send_mail`` in a process of its own, as cron runs it; print what it prints."""
        command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "send_mail"]
        self.stdout.write("  $ python manage.py send_mail")
        done = subprocess.run(
            command, env={**os.environ, "EXAMPLE_SMTP_PORT": str(port)}, capture_output=True, text=True, timeout=120
        )
        for line in (done.stdout + done.stderr).splitlines():
            self.stdout.write(f"  {line}")
        self.stdout.write(
            f"  (exit status {done.returncode}: mail deferred or given up is no error for cron, as with "
            "django-mailer 2.x; the line above and the log say what went wrong)"
        )

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
