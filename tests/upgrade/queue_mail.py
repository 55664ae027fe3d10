"""Runs INSIDE the Django 5.2 venv (``python -m tests.upgrade.queue_mail``), never imported by the test suite.

Queues mail with our package (from the working tree) the ways a project does: Django's ``send_mail`` and
``EmailMultiAlternatives.send()`` through ``EMAIL_BACKEND = "mailer.backend.DbBackend"``, and
``mailer.send_mail`` / ``mailer.send_html_mail``. Prints, on the last line of stdout, a JSON description of
every message as the SMTP server must receive it after the upgrade.
"""

import base64
import json

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core import mail  # noqa: E402

import mailer  # noqa: E402
from mailer.models import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MEDIUM, Message  # noqa: E402

FROM = "Upgrade Sender <sender@example.com>"
LONG_LINE = "0123456789 ünïcödé " * 60  # > 998 characters: the body must be encoded, not sent as is
expected = []


def record(key, priority, subject, body, *, alternatives=(), attachments=(), **fields):
    """Describe a queued message as it must arrive; ``fields``: from_email, to, cc, bcc, reply_to, headers."""
    message = {"from_email": FROM, "to": [], "cc": [], "bcc": [], "reply_to": [], "headers": {}, **fields}
    message.update(key=key, priority=priority, subject=subject, body=body, alternatives=alternatives)
    message["attachments"] = [[name, base64.b64encode(data).decode(), mimetype] for name, data, mimetype in attachments]
    expected.append(message)


# 1. Django's send_mail with an HTML part, through EMAIL_BACKEND (DbBackend): medium priority.
subject, body, html = "[upgrade:django] Plain and HTML", "Hello from Django 5.2.\n", "<p>Hello from <b>5.2</b></p>"
mail.send_mail(subject, body, FROM, ["rcpt@example.com"], html_message=html)
record("django", PRIORITY_MEDIUM, subject, body, to=["rcpt@example.com"], alternatives=[(html, "text/html")])

# 2. Everything an EmailMultiAlternatives can carry.
subject = "[upgrade:multi] Grüße, ünïcödé — 日本語 ✉"
body = f"Dear Zoë,\n\nÇa va? Привет! 🎉\n{LONG_LINE}\n"
html = "<p>Dear <i>Zoë</i>, ça va? Привет! 🎉</p>"
text, binary = "Notes: ünïcödé ✓\nsecond line\n", bytes(range(256))
kwargs = {
    "from_email": "Sénder Ünïcode <sender@example.com>",
    "to": ["Zoë Müller <zoe@example.com>", "plain@example.com"],
    "cc": ["Ćelina Cc <cc@example.com>"],
    "bcc": ["hidden@example.com", "Secret Person <secret@example.com>"],
    "reply_to": ["Réply Desk <reply@example.com>"],
    "headers": {"X-Upgrade-Test": "multi ✓ 5.2→6.1", "Message-ID": "<upgrade-multi@example.com>"},
}
email = mail.EmailMultiAlternatives(subject, body, **kwargs)
email.attach_alternative(html, "text/html")
email.attach("notes.txt", text, "text/plain")
email.attach("all-bytes.bin", binary, "application/octet-stream")
email.send()
record(
    "multi",
    PRIORITY_MEDIUM,
    subject,
    body,
    **kwargs,
    alternatives=[(html, "text/html")],
    attachments=[("notes.txt", text.encode(), "text/plain"), ("all-bytes.bin", binary, "application/octet-stream")],
)

# 3. Our API, at other priorities.
subject, body = "[upgrade:mailer_high] Urgent", "High priority, queued by mailer.send_mail.\n"
mailer.send_mail(subject, body, FROM, ["ops@example.com"], priority=PRIORITY_HIGH)
record("mailer_high", PRIORITY_HIGH, subject, body, to=["ops@example.com"])

subject, body, html = "[upgrade:mailer_html] Newsletter", "Low priority text.\n", "<h1>Low priority</h1>"
headers = {"X-Upgrade-Test": "mailer_html", "List-Unsubscribe": "<mailto:unsubscribe@example.com>"}
mailer.send_html_mail(subject, body, html, FROM, ["news@example.com"], priority=PRIORITY_LOW, headers=headers)
record(
    "mailer_html",
    PRIORITY_LOW,
    subject,
    body,
    to=["news@example.com"],
    headers=headers,
    alternatives=[(html, "text/html")],
)

print(
    json.dumps(
        {
            "django": django.get_version(),
            "mailer_file": mailer.__file__,
            "email_backend": settings.EMAIL_BACKEND,
            "queue": sorted(Message.objects.values_list("priority", flat=True)),
            "messages": expected,
        }
    )
)
