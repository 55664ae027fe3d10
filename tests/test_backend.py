"""mailer.backend.DbBackend: Django's own mail functions queue; send_all() then really sends (locmem or SMTP)."""

import email.utils

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.message import BadHeaderError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mailer import engine
from mailer.backend import DbBackend
from mailer.models import (
    PRIORITY_MEDIUM,
    RESULT_DONT_SEND,
    RESULT_SUCCESS,
    Message,
    MessageLog,
    get_message_id,
)
from mailer.routing import mailers_configured
from tests.support.queries import inserts_into
from tests.support.queueing import block

pytestmark = pytest.mark.django_db


def queued_emails():
    return [m.email for m in Message.objects.order_by("id")]


# Django's mail functions queue instead of sending


def test_get_connection_is_the_queue():
    assert isinstance(mail.get_connection(), DbBackend)


def test_django_send_mail_queues():
    assert mail.send_mail("Subject", "Body", "from@example.org", ["to@example.org"]) == 1

    assert mail.outbox == []
    [message] = Message.objects.all()
    assert message.priority == PRIORITY_MEDIUM
    queued = message.email
    assert (queued.subject, queued.body, queued.from_email, queued.to) == (
        "Subject",
        "Body",
        "from@example.org",
        ["to@example.org"],
    )

    engine.send_all()

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Subject"
    assert mail.outbox[0].to == ["to@example.org"]
    assert Message.objects.count() == 0
    assert MessageLog.objects.get().result == RESULT_SUCCESS


def test_django_send_mail_with_html_message():
    mail.send_mail("S", "Plain", "from@example.org", ["to@example.org"], html_message="<p>HTML</p>")
    [queued] = queued_emails()
    assert isinstance(queued, EmailMultiAlternatives)
    assert [tuple(a) for a in queued.alternatives] == [("<p>HTML</p>", "text/html")]


def test_django_send_mass_mail_returns_number_queued():
    datatuple = [
        ("S1", "B1", "from@example.org", ["a@example.org"]),
        ("S2", "B2", "from@example.org", ["b@example.org"]),
        ("S3", "B3", "from@example.org", ["c@example.org"]),
    ]
    assert mail.send_mass_mail(datatuple) == 3
    assert mail.outbox == []
    assert [e.subject for e in queued_emails()] == ["S1", "S2", "S3"]

    engine.send_all()

    assert sorted(m.subject for m in mail.outbox) == ["S1", "S2", "S3"]


def test_email_message_send_queues():
    message = EmailMessage(
        "Subject",
        "Body",
        "from@example.org",
        ["to@example.org"],
        cc=["cc@example.org"],
        bcc=["bcc@example.org"],
        reply_to=["reply@example.org"],
        headers={"X-Tag": "t1"},
    )
    assert message.send() == 1

    assert mail.outbox == []
    [queued] = queued_emails()
    assert (queued.to, queued.cc, queued.bcc, queued.reply_to) == (
        ["to@example.org"],
        ["cc@example.org"],
        ["bcc@example.org"],
        ["reply@example.org"],
    )
    assert queued.extra_headers == {"X-Tag": "t1", "Message-ID": get_message_id(queued)}  # given when queued
    assert message.extra_headers == {"X-Tag": "t1"}  # in the stored copy only
    assert queued.connection is None  # the DbBackend it was sent through is not stored

    engine.send_all()
    [sent] = mail.outbox
    assert sent.recipients() == ["to@example.org", "cc@example.org", "bcc@example.org"]
    assert sent.message()["X-Tag"] == "t1"


def test_email_multi_alternatives_with_attachment():
    message = EmailMultiAlternatives("S", "Plain", "from@example.org", ["to@example.org"])
    message.attach_alternative("<b>Bold</b>", "text/html")
    message.attach("report.pdf", b"%PDF-1.4\x00\xff binary", "application/pdf")
    assert message.send() == 1

    assert mail.outbox == []
    [queued] = queued_emails()
    assert [tuple(a) for a in queued.alternatives] == [("<b>Bold</b>", "text/html")]
    assert [tuple(a) for a in queued.attachments] == [("report.pdf", b"%PDF-1.4\x00\xff binary", "application/pdf")]

    engine.send_all()
    [sent] = mail.outbox
    assert [tuple(a) for a in sent.attachments] == [("report.pdf", b"%PDF-1.4\x00\xff binary", "application/pdf")]


def test_django_mail_admins_and_mail_managers_queue(settings):
    settings.ADMINS = [("Admin", "admin@example.org")]
    settings.MANAGERS = [("Manager", "manager@example.org")]
    settings.SERVER_EMAIL = "server@example.org"
    settings.EMAIL_SUBJECT_PREFIX = "[Test] "

    mail.mail_admins("Broken", "Traceback")
    mail.mail_managers("Report", "Numbers", html_message="<p>Numbers</p>")

    assert mail.outbox == []
    admins, managers = queued_emails()
    assert (admins.subject, admins.to, admins.from_email) == (
        "[Test] Broken",
        ["admin@example.org"],
        "server@example.org",
    )
    assert (managers.subject, managers.to) == ("[Test] Report", ["manager@example.org"])
    assert [tuple(a) for a in managers.alternatives] == [("<p>Numbers</p>", "text/html")]

    engine.send_all()
    assert sorted(m.subject for m in mail.outbox) == ["[Test] Broken", "[Test] Report"]


def test_send_messages_empty_batch():
    assert DbBackend().send_messages([]) == 0
    assert Message.objects.count() == 0


def test_send_messages_returns_number_queued():
    emails = [EmailMessage(f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(4)]
    with mail.get_connection() as conn:
        assert conn.send_messages(emails) == 4
    assert Message.objects.count() == 4


# Batching


def test_batch_is_one_bulk_insert():
    emails = [EmailMessage(f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(5)]
    with CaptureQueriesContext(connection) as captured:
        assert DbBackend().send_messages(emails) == 5
    assert len(inserts_into("mailer_message", captured.captured_queries)) == 1
    assert Message.objects.count() == 5


def test_messages_batch_size_is_passed_to_bulk_create(settings):
    settings.MAILER_MESSAGES_BATCH_SIZE = 2
    emails = [EmailMessage(f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(3)]

    with CaptureQueriesContext(connection) as captured:
        assert DbBackend().send_messages(emails) == 3

    # 3 messages in batches of 2: two INSERT statements.
    assert len(inserts_into("mailer_message", captured.captured_queries)) == 2
    assert sorted(e.subject for e in queued_emails()) == ["S0", "S1", "S2"]


def test_mass_mail_batch_size(settings):
    settings.MAILER_MESSAGES_BATCH_SIZE = 1
    datatuple = [(f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(3)]
    with CaptureQueriesContext(connection) as captured:
        assert mail.send_mass_mail(datatuple) == 3
    assert len(inserts_into("mailer_message", captured.captured_queries)) == 3


# The don't-send list


def test_dont_send_list_applies_to_to_cc_and_bcc():
    block("to-blocked@example.org")
    block("cc-blocked@example.org")
    block("bcc-blocked@example.org")

    EmailMessage(
        "S",
        "B",
        "f@example.org",
        ["to-ok@example.org", "to-blocked@example.org"],
        cc=["cc-blocked@example.org", "cc-ok@example.org"],
        bcc=["bcc-blocked@example.org", "bcc-ok@example.org"],
    ).send()

    [queued] = queued_emails()
    assert queued.to == ["to-ok@example.org"]
    assert queued.cc == ["cc-ok@example.org"]
    assert queued.bcc == ["bcc-ok@example.org"]

    engine.send_all()
    assert mail.outbox[0].recipients() == ["to-ok@example.org", "cc-ok@example.org", "bcc-ok@example.org"]


def test_dont_send_list_matches_display_names_and_case():
    block("ann@x.org")
    mail.send_mail("S", "B", "f@example.org", ["Ann <ANN@x.org>", "Bob <bob@x.org>"])
    [queued] = queued_emails()
    assert queued.to == ["Bob <bob@x.org>"]


def test_dont_send_entry_with_upper_case_blocks_lower_case_address():
    block("Carol@X.org")
    mail.send_mail("S", "B", "f@example.org", ["carol@x.org", "dave@x.org"])
    assert queued_emails()[0].to == ["dave@x.org"]


def test_all_recipients_blocked_is_logged_not_queued():
    block("ann@x.org")
    block("bob@x.org")

    sent = EmailMessage(
        "Nobody left", "B", "f@example.org", ["Ann <ann@x.org>"], cc=["BOB@x.org"], headers={"Message-ID": "<n@x.org>"}
    ).send()

    assert sent == 0
    assert Message.objects.count() == 0
    log = MessageLog.objects.get()
    assert log.result == RESULT_DONT_SEND
    assert log.subject == "Nobody left"
    assert log.message_id == "<n@x.org>"
    assert log.priority == PRIORITY_MEDIUM

    engine.send_all()
    assert mail.outbox == []


def test_batch_with_some_messages_fully_blocked():
    block("gone@x.org")
    emails = [
        EmailMessage("A", "B", "f@example.org", ["gone@x.org"]),
        EmailMessage("B", "B", "f@example.org", ["here@x.org"]),
        EmailMessage("C", "B", "f@example.org", ["here@x.org", "gone@x.org"]),
    ]
    assert DbBackend().send_messages(emails) == 2
    assert [(e.subject, e.to) for e in queued_emails()] == [("B", ["here@x.org"]), ("C", ["here@x.org"])]
    assert list(MessageLog.objects.values_list("result", flat=True)) == [RESULT_DONT_SEND]
    assert MessageLog.objects.get().subject == "A"


def test_dont_send_list_applies_again_at_send_time():
    mail.send_mail("Queued first", "B", "f@example.org", ["late@x.org"])
    mail.send_mail("Partly", "B", "f@example.org", ["late@x.org", "fine@x.org"])
    assert Message.objects.count() == 2

    block("LATE@x.org")
    engine.send_all()

    assert [(m.subject, m.to) for m in mail.outbox] == [("Partly", ["fine@x.org"])]
    assert Message.objects.count() == 0
    logs = {log.subject: log.result for log in MessageLog.objects.all()}
    assert logs == {"Queued first": RESULT_DONT_SEND, "Partly": RESULT_SUCCESS}


# Bad input


def test_batch_with_header_newline_raises_and_stores_nothing():
    emails = [
        EmailMessage("Good", "B", "f@example.org", ["a@example.org"]),
        EmailMessage("Bad", "B", "f@example.org", ["b@example.org"], headers={"X-Bad": "one\ntwo"}),
        EmailMessage("Good too", "B", "f@example.org", ["c@example.org"]),
    ]
    with pytest.raises(BadHeaderError):
        DbBackend().send_messages(emails)
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


def test_batch_with_subject_newline_raises_and_stores_nothing():
    with pytest.raises(BadHeaderError):
        mail.send_mass_mail(
            [
                ("Fine", "B", "f@example.org", ["a@example.org"]),
                ("Not\r\nfine", "B", "f@example.org", ["b@example.org"]),
            ]
        )
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"to": ["a@example.org\nBcc: victim@example.org"]},
        {"to": ["a@example.org"], "cc": ["c@example.org\r\nX-Injected: 1"]},
        {"to": ["a@example.org"], "bcc": ["b@example.org\n"]},
        {"to": ["a@example.org"], "reply_to": ["r@example.org\r\nBcc: victim@example.org"]},
        {"to": ["a@example.org"], "from_email": "f@example.org\nBcc: victim@example.org"},
    ],
    ids=["to", "cc", "bcc", "reply_to", "from_email"],
)
def test_address_with_newline_raises_at_queue_time(kwargs):
    """Django would refuse these when sending; the caller must hear about it now, and nothing may be stored."""
    kwargs.setdefault("from_email", "f@example.org")
    emails = [
        EmailMessage("Good", "B", "f@example.org", ["ok@example.org"]),
        EmailMessage("Bad", "B", **kwargs),
    ]
    if "bcc" not in kwargs:  # Bcc is not a header; the SMTP backend refuses it when sending (sanitize_address)
        with pytest.raises(BadHeaderError):
            emails[1].message()  # what sending would do later
    with pytest.raises(BadHeaderError):
        DbBackend().send_messages(emails)
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


def test_batch_with_non_string_recipient_raises_and_stores_nothing():
    block("blocked@example.org")  # even a batch that would also log a don't-send entry writes nothing
    emails = [
        EmailMessage("Good", "B", "f@example.org", ["a@example.org"]),
        EmailMessage("Skipped", "B", "f@example.org", ["blocked@example.org"]),
        EmailMessage("Bad", "B", "f@example.org", ["b@example.org", 42]),
    ]
    with pytest.raises(TypeError):
        DbBackend().send_messages(emails)
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


def test_fail_silently_swallows_errors():
    emails = [
        EmailMessage("Good", "B", "f@example.org", ["a@example.org"]),
        EmailMessage("Bad", "B", "f@example.org", ["b@example.org"], headers={"X-Bad": "x\r\ny"}),
    ]
    assert DbBackend(fail_silently=True).send_messages(emails) == 0
    assert Message.objects.count() == 0

    assert mail.send_mail("Bad\nsubject", "B", "f@example.org", ["a@example.org"], fail_silently=True) == 0
    assert Message.objects.count() == 0

    with pytest.raises(BadHeaderError):
        mail.send_mail("Bad\nsubject", "B", "f@example.org", ["a@example.org"], fail_silently=False)


def test_queue_backend_as_real_sender_is_refused(settings):
    settings.MAILER_EMAIL_BACKEND = "mailer.backend.DbBackend"
    mail.send_mail("S", "B", "f@example.org", ["a@example.org"])
    with pytest.raises(ImproperlyConfigured) as info:
        engine.send_all()
    text = str(info.value)
    assert "MAILER_EMAIL_BACKEND" in text and "mailer.backend.DbBackend" in text
    assert ("MAILER_DELIVER_USING" if mailers_configured() else "EMAIL_BACKEND is") in text
    assert Message.objects.count() == 1  # nothing lost


# A real round trip through Django's SMTP backend


def received_by_subject(smtp_server, n):
    messages = smtp_server.wait_for(n)
    assert len(messages) == n
    return {m.message["Subject"]: m for m in messages}


def test_smtp_round_trip(smtp_settings):
    smtp_server = smtp_settings
    attachment = bytes(range(256)) * 4

    mail.send_mail("Plain", "Just text.\n", "from@example.org", ["plain@example.org"])

    html = EmailMultiAlternatives("Alternative", "Text part", "from@example.org", ["html@example.org"])
    html.attach_alternative("<h1>HTML part</h1>", "text/html")
    html.send()

    with_file = EmailMessage("Attachment", "See attached", "from@example.org", ["file@example.org"])
    with_file.attach("blob.bin", attachment, "application/octet-stream")
    with_file.send()

    EmailMessage(
        "Copies",
        "Copy body",
        "Sender Name <from@example.org>",
        ["to@example.org"],
        cc=["cc@example.org"],
        bcc=["hidden@example.org"],
        reply_to=["reply@example.org"],
    ).send()

    EmailMessage("Ünïcödé ✉ subject", "Grüße, 日本語 ✓", "from@example.org", ["uni@example.org"]).send()

    EmailMessage(
        "Headers",
        "B",
        "from@example.org",
        ["headers@example.org"],
        headers={"X-Campaign": "spring-2024", "X-Priority": "1", "Message-ID": "<custom-id@example.org>"},
    ).send()

    assert smtp_server.messages == []  # all queued, nothing sent yet
    assert Message.objects.count() == 6

    result = engine.send_all()

    assert result.sent == 6
    received = received_by_subject(smtp_server, 6)
    assert Message.objects.count() == 0

    plain = received["Plain"]
    assert plain.mail_from == "from@example.org"
    assert plain.rcpt_tos == ["plain@example.org"]
    assert plain.message.get_content().replace("\r\n", "\n") == "Just text.\n"

    alternative = received["Alternative"].message
    assert alternative.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in alternative.iter_parts()}
    assert parts["text/plain"].strip() == "Text part"
    assert parts["text/html"].strip() == "<h1>HTML part</h1>"

    attached = received["Attachment"].message
    assert attached.get_content_type() == "multipart/mixed"
    [file_part] = list(attached.iter_attachments())
    assert file_part.get_filename() == "blob.bin"
    assert file_part.get_content_type() == "application/octet-stream"
    assert file_part.get_content() == attachment
    assert attached.get_body(("plain",)).get_content().strip() == "See attached"

    copies = received["Copies"]
    assert sorted(copies.rcpt_tos) == ["cc@example.org", "hidden@example.org", "to@example.org"]
    assert copies.mail_from == "from@example.org"
    assert copies.message["To"] == "to@example.org"
    assert copies.message["Cc"] == "cc@example.org"
    assert copies.message["Reply-To"] == "reply@example.org"
    assert copies.message["Bcc"] is None
    assert b"hidden@example.org" not in copies.data
    assert email.utils.parseaddr(copies.message["From"]) == ("Sender Name", "from@example.org")

    unicode = received["Ünïcödé ✉ subject"]
    assert unicode.message.get_content().strip() == "Grüße, 日本語 ✓"
    assert unicode.rcpt_tos == ["uni@example.org"]

    headers = received["Headers"].message
    assert headers["X-Campaign"] == "spring-2024"
    assert headers["X-Priority"] == "1"
    assert headers["Message-ID"] == "<custom-id@example.org>"

    # Every message went out with a Message-ID, and the log records the one the server saw.
    logs = {log.subject: log for log in MessageLog.objects.all()}
    assert set(logs) == set(received)
    for subject, got in received.items():
        assert logs[subject].result == RESULT_SUCCESS
        assert got.message["Message-ID"]
        assert logs[subject].message_id == got.message["Message-ID"], subject
    assert len({log.message_id for log in logs.values()}) == 6


def test_smtp_dont_send_at_send_time(smtp_settings):
    smtp_server = smtp_settings
    EmailMessage("Mixed", "B", "f@example.org", ["keep@example.org"], bcc=["drop@example.org"]).send()
    mail.send_mail("Only dropped", "B", "f@example.org", ["drop@example.org"])
    block("drop@example.org")

    result = engine.send_all()

    assert (result.sent, result.skipped) == (1, 1)
    [got] = smtp_server.wait_for(1)
    assert got.rcpt_tos == ["keep@example.org"]
    assert got.message["Subject"] == "Mixed"
    assert {log.subject: log.result for log in MessageLog.objects.all()} == {
        "Mixed": RESULT_SUCCESS,
        "Only dropped": RESULT_DONT_SEND,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("count", [2, 50])
def test_a_batch_is_written_inside_one_transaction(count):
    """Outside a transaction, a driver's executemany() commits each row on its own (SQLite): slow, and a
    failure halfway would leave half a batch queued."""
    seen = []

    def record(execute, sql, params, many, context):
        if "mailer_message" in sql and sql.lstrip().upper().startswith(("INSERT", "COPY")):
            seen.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    emails = [EmailMessage(f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(count)]
    with connection.execute_wrapper(record):
        assert DbBackend().send_messages(emails) == count
    assert Message.objects.count() == count
    if connection.vendor == "postgresql" and not seen:
        return  # one COPY, which Django's execute wrappers don't see: a single statement anyway
    assert seen and all(seen)
