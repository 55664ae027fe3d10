"""Runs INSIDE the django-mailer 2.3.2 virtualenv (never imported by the test suite).

Queues mail through django-mailer 2.3.2's own API, the way a project using it does, and prints a JSON
manifest of what it queued (and what the sender must deliver) on the last line of stdout. It is copied
to a temporary directory before it runs, so nothing of this repository (our ``mailer``) is importable.
"""

import base64
import json

import django

django.setup()

from django.core import mail as django_mail  # noqa: E402
from django.core.mail import EmailMessage  # noqa: E402

import mailer  # noqa: E402
from mailer import models  # noqa: E402
from mailer.engine import send_all  # noqa: E402

assert mailer.__version__ == "2.3.2", f"this must run on django-mailer 2.3.2, not {mailer.__version__}"
assert "site-packages" in mailer.__file__, f"mailer comes from {mailer.__file__}, not the 2.3.2 venv"

FROM = "Drop-in Sender <sender@example.com>"
TO = ["Recipient <rcpt@example.com>"]
ATTACHMENT = bytes(range(256)) * 5 + b"\x00\xff\r\n\x1a end"
manifest = {"mailer_version": mailer.__version__, "mailer_file": mailer.__file__, "django": django.get_version()}
messages = manifest["messages"] = []


def latest():
    return models.Message.objects.order_by("-id").first()


def record(
    key,
    subject,
    body,
    *,
    from_email=FROM,
    to=TO,
    cc=(),
    bcc=(),
    reply_to=(),
    html=None,
    attachments=(),
    headers=None,
    row=None,
):
    row = row or latest()
    data = base64.b64decode(row.message_data)
    messages.append(
        {
            "key": key,
            "id": row.id,
            "priority": row.priority,
            "subject": subject,
            "body": body,
            "html": html,
            "from": from_email,
            "to": list(to),
            "cc": list(cc),
            "bcc": list(bcc),
            "reply_to": list(reply_to),
            "headers": headers or {},
            "attachments": [
                [name, mimetype, base64.b64encode(content).decode()] for name, content, mimetype in attachments
            ],
            # 2.3.2 pickles the backend instance along with the email when it was queued through DbBackend.
            "pickled_connection": b"mailer.backend" in data and b"DbBackend" in data,
            "deferred": False,
        }
    )
    return row


# 0. A message 2.3.2 already sent itself (dummy backend): its MessageLog row must stay readable.
mailer.send_mail("[dropin:presend] sent by 2.3.2", "Sent before the switch.\n", FROM, TO)
sent_id = latest().id
send_all()
assert not models.Message.objects.exists(), "2.3.2 did not send the pre-switch message"
log = models.MessageLog.objects.get()
manifest["presend"] = {
    "subject": "[dropin:presend] sent by 2.3.2",
    "to": TO,
    "message_id": log.message_id,
    "result": log.result,
    "log_id": log.id,
    "message_pk": sent_id,
}

# 1. mailer.send_mail: plain text, default (medium) priority.
body = "A plain message.\nSecond line.\n"
mailer.send_mail("[dropin:plain] plain text", body, FROM, TO)
record("plain", "[dropin:plain] plain text", body)

# 2. mailer.send_html_mail: text plus a text/html alternative, with a header.
html = "<p>An <b>HTML</b> message.</p>\n"
mailer.send_html_mail("[dropin:html] html", "The text part.\n", html, FROM, TO, headers={"X-Dropin-Kind": "html"})
record("html", "[dropin:html] html", "The text part.\n", html=html, headers={"X-Dropin-Kind": "html"})

# 3. An EmailMessage with a binary attachment, stored through make_message + msg.email.
email = EmailMessage("[dropin:attachment] attachment", "See the attachment.\n", FROM, TO)
email.attach("payload.bin", ATTACHMENT, "application/octet-stream")
msg = models.make_message(priority=models.PRIORITY_MEDIUM)
msg.email = email
msg.save()
record("attachment", email.subject, email.body, attachments=[("payload.bin", ATTACHMENT, "application/octet-stream")])

# 4. Django's own send_mail with EMAIL_BACKEND = DbBackend (2.3.2 pickles the DbBackend along with it).
django_mail.send_mail(
    "[dropin:django] django send_mail", "Queued by django.core.mail.send_mail.\n", FROM, ["rcpt@example.com"]
)
row = record(
    "django", "[dropin:django] django send_mail", "Queued by django.core.mail.send_mail.\n", to=["rcpt@example.com"]
)
assert messages[-1]["pickled_connection"], "expected 2.3.2 to pickle the DbBackend connection"

# 5-7. One message at each priority.
for name, priority in (
    ("high", models.PRIORITY_HIGH),
    ("medium", models.PRIORITY_MEDIUM),
    ("low", models.PRIORITY_LOW),
):
    subject = f"[dropin:{name}] priority {name}"
    mailer.send_mail(subject, f"Priority {name}.\n", FROM, TO, priority=priority)
    record(name, subject, f"Priority {name}.\n")
    assert messages[-1]["priority"] == priority

# 8. cc, bcc, reply-to, custom headers and a Message-ID of its own, through EmailMessage.send() + DbBackend.
headers = {"X-Custom-Header": "drop-in value", "Message-ID": "<dropin-ccbcc@example.com>"}
email = EmailMessage(
    "[dropin:ccbcc] cc and bcc",
    "Copied and blind-copied.\n",
    FROM,
    ["to1@example.com", "To Two <to2@example.com>"],
    bcc=["hidden@example.com"],
    cc=["Carbon <cc@example.com>"],
    reply_to=["replies@example.com"],
    headers=headers,
)
assert email.send() == 1
record(
    "ccbcc",
    email.subject,
    email.body,
    to=email.to,
    cc=email.cc,
    bcc=email.bcc,
    reply_to=email.reply_to,
    headers=headers,
)

# 9. Unicode everywhere a project puts it.
subject = "[dropin:unicode] Grüße — 日本語 ✉"
body = "Ünïcödé bödy — ✓ 😀\nЗдравствуйте, мир.\n"
mailer.send_mail(subject, body, "Zoë Sender <zoe@example.com>", ["Jürgen <juergen@example.com>"])
record("unicode", subject, body, from_email="Zoë Sender <zoe@example.com>", to=["Jürgen <juergen@example.com>"])

# 10. mail_admins and send_mass_mail of 2.3.2.
mailer.mail_admins("[dropin:admins] admins", "For the admins.\n")
record(
    "admins",
    "[Django] [dropin:admins] admins",
    "For the admins.\n",
    from_email="root@localhost",
    to=["admin@example.com"],
)
mailer.send_mass_mail(
    [
        ("[dropin:mass1] mass one", "Mass one.\n", FROM, ["m1@example.com"]),
        ("[dropin:mass2] mass two", "Mass two.\n", FROM, ["m2@example.com"]),
    ]
)
mass = list(models.Message.objects.order_by("-id")[:2])[::-1]
record("mass1", "[dropin:mass1] mass one", "Mass one.\n", to=["m1@example.com"], row=mass[0])
record("mass2", "[dropin:mass2] mass two", "Mass two.\n", to=["m2@example.com"], row=mass[1])

# 11. A deferred message (as 2.3.2 leaves one after a delivery failure).
mailer.send_mail("[dropin:deferred] deferred", "I was deferred.\n", FROM, TO, priority=models.PRIORITY_LOW)
row = latest()
row.defer()
record("deferred", "[dropin:deferred] deferred", "I was deferred.\n", row=models.Message.objects.get(pk=row.pk))
messages[-1]["deferred"] = True
assert messages[-1]["priority"] == models.PRIORITY_DEFERRED

# Every row must round-trip through 2.3.2 itself (proves the manifest describes what is stored).
for entry in messages:
    stored = models.Message.objects.get(pk=entry["id"]).email
    assert stored.subject == entry["subject"], (stored.subject, entry["subject"])
    assert stored.body == entry["body"], (stored.body, entry["body"])

manifest["queue"] = {
    "total": models.Message.objects.count(),
    "deferred": models.Message.objects.deferred().count(),
    "max_retry_count": max(m.retry_count for m in models.Message.objects.all()),
}
print(json.dumps(manifest))
