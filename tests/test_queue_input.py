"""What the door lets in can be sent (issue 12, items 1, 9, 10 and 11).

Header values, lazy text, priorities and the size of a row are checked and normalised when queueing, through
both ways of queueing: Django's mail API with ``DbBackend`` (``EmailMessage.send()``) and mailer's own
functions (``send_html_mail`` takes headers). What is refused leaves nothing stored; what is accepted is sent
by ``send_all()`` to a real SMTP server and logged.
"""

import os
import uuid
import warnings

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from django.utils.functional import lazy
from django.utils.translation import gettext_lazy

import mailer
from mailer import enqueue
from mailer.backend import DbBackend
from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, PRIORITY_HIGH, RESULT_SUCCESS, Message, MessageLog, make_message
from tests.support.queueing import assert_nothing_stored

pytestmark = pytest.mark.django_db

GOOD = "ann@example.org"


def _same(text):
    return text


lazy_text = lazy(_same, str)  # picklable, like gettext_lazy: a queued lazy string is evaluated when unpickled


class Multiline:
    """A header value that is not a string, and whose ``str()`` has a newline."""

    def __str__(self):
        return "a\r\nBcc: x@example.org"


def via_django(subject="S", body="B", to=(GOOD,), headers=None, html="<p>B</p>", from_email="f@example.org"):
    email = EmailMultiAlternatives(subject, body, from_email, list(to), headers=headers)
    email.attach_alternative(html, "text/html")
    return email.send()


def via_mailer(subject="S", body="B", to=(GOOD,), headers=None, html="<p>B</p>", from_email="f@example.org"):
    return mailer.send_html_mail(subject, body, html, from_email, list(to), headers=headers)


WAYS = [pytest.param(via_django, id="django"), pytest.param(via_mailer, id="mailer")]


# (id, keyword arguments of via_django / via_mailer, words of the exception's message)
REFUSED = [
    ("nul-in-message-id", {"headers": {"Message-ID": "<a\x00b@example.org>"}}, "'Message-ID'"),
    ("emoji-message-id", {"headers": {"Message-ID": "<\U0001f4e7@example.org>"}}, "'Message-ID'.*ASCII"),
    ("lowercase-message-id-with-emoji", {"headers": {"message-id": "<\U0001f4e7@example.org>"}}, "'message-id'"),
    ("control-character-in-header", {"headers": {"X-Tag": "a\x01b"}}, "'X-Tag'.*control"),
    ("nul-in-subject", {"subject": "a\x00b"}, "'Subject'.*control"),
    ("lazy-subject-with-newline", {"subject": lazy_text("a\nBcc: x@example.org")}, "newlines"),
    ("lazy-header-with-newline", {"headers": {"X-Tag": lazy_text("a\nb")}}, "'X-Tag'"),
    ("str-of-header-with-newline", {"headers": {"X-Tag": Multiline()}}, "newlines.*'X-Tag'"),
    ("surrogate-in-subject", {"subject": "caf\ud800"}, "'Subject'.*surrogate"),
    ("lazy-surrogate-in-subject", {"subject": lazy_text("\udc80")}, "'Subject'.*surrogate"),
    ("surrogate-in-body", {"body": "hello \ud800"}, "body.*surrogate"),
    ("surrogate-in-header", {"headers": {"X-Tag": "\udfff"}}, "'X-Tag'.*surrogate"),
    ("surrogate-in-display-name", {"to": ["Zo\ud800 <zoe@example.org>"]}, "in to.*surrogate"),
    ("surrogate-in-sender-name", {"from_email": "F\udc80 <f@example.org>"}, "in from_email.*surrogate"),
    ("surrogate-in-alternative", {"html": "<p>\ud800</p>"}, "alternative.*surrogate"),
]


@pytest.mark.parametrize("queue", WAYS)
@pytest.mark.parametrize("kwargs, words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_input_that_could_not_be_sent_is_refused_when_queueing(queue, kwargs, words):
    with pytest.raises(ValueError, match=words):
        queue(**kwargs)
    assert_nothing_stored()


@pytest.mark.parametrize("kwargs, words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_backend_batch_with_one_such_message_stores_nothing(kwargs, words):
    def email(subject="S", body="B", to=(GOOD,), headers=None, html="<p>B</p>", from_email="f@example.org"):
        message = EmailMultiAlternatives(subject, body, from_email, list(to), headers=headers)
        message.attach_alternative(html, "text/html")
        return message

    with pytest.raises(ValueError, match=words):
        DbBackend().send_messages([email(subject="fine 1"), email(**kwargs), email(subject="fine 2")])
    assert_nothing_stored()


@pytest.mark.parametrize(
    "attachment, words",
    [
        (("notes.txt", "caf\ud800", "text/plain"), "attachment 'notes.txt'.*surrogate"),
        (("\udc80.txt", "fine", "text/plain"), "attachment's file name.*surrogate"),
    ],
    ids=["surrogate-in-text", "surrogate-in-file-name"],
)
def test_an_attachment_that_could_not_be_sent_is_refused(attachment, words):
    email = EmailMultiAlternatives("S", "B", "f@example.org", [GOOD], attachments=[attachment])
    with pytest.raises(ValueError, match=words):
        email.send()
    with pytest.raises(ValueError, match=words):
        make_message("S", "B", "f@example.org", [GOOD], attachments=[attachment])
    assert_nothing_stored()


# (id, headers given, headers stored: every value a plain str)
NORMALISED = [
    ("lazy-message-id", {"Message-ID": lazy_text("<lazy@example.org>")}, {"Message-ID": "<lazy@example.org>"}),
    (
        "uuid-message-id",
        {"Message-ID": uuid.UUID("6f1c2a8e-0b7e-4a53-9a51-3a2b8b0c9d10")},
        {"Message-ID": "6f1c2a8e-0b7e-4a53-9a51-3a2b8b0c9d10"},
    ),
    ("int-header", {"X-Count": 5, "X-Tag": lazy_text("tagged")}, {"X-Count": "5", "X-Tag": "tagged"}),
]


@pytest.mark.parametrize("queue", WAYS)
@pytest.mark.parametrize("given, stored", [c[1:] for c in NORMALISED], ids=[c[0] for c in NORMALISED])
def test_header_values_are_stored_as_text_and_sent(queue, given, stored, smtp_settings):
    assert queue(headers=given) == 1
    headers = Message.objects.get().email.extra_headers
    assert headers == {"Message-ID": headers.get("Message-ID"), **stored}  # one given when queued if none was
    assert all(type(value) is str for value in headers.values())

    assert send_all().sent == 1
    assert len(smtp_settings.wait_for(1)) == 1
    assert Message.objects.count() == 0
    log = MessageLog.objects.get()
    assert log.result == RESULT_SUCCESS
    if "Message-ID" in stored:
        assert log.message_id == stored["Message-ID"]


@pytest.mark.parametrize("queue", WAYS)
def test_what_is_accepted_is_sent(queue, smtp_settings):
    """Non-ASCII text, lazy values, a tab in a header: queued, then really sent, and logged as sent."""
    queue(
        subject=lazy_text("Caf\u00e9 \u2014 \u0414\u0430"),
        body="Gr\u00fc\u00dfe \U0001f600\n\u2028second line",
        to=["Zo\u00eb <zoe@ex\u00e4mple.org>"],
        from_email="B\u00e9a <bea@example.org>",
        headers={"X-Tag": "a\tb", "X-Lazy": lazy_text("\u00e9t\u00e9"), "Message-ID": "<ok.1@example.org>"},
        html=lazy_text("<p>\u00e9t\u00e9 \U0001f600</p>"),
    )
    assert send_all().sent == 1
    [received] = smtp_settings.wait_for(1)
    assert MessageLog.objects.get().result == RESULT_SUCCESS
    assert MessageLog.objects.get().message_id == "<ok.1@example.org>"
    assert Message.objects.count() == 0


@pytest.mark.parametrize("queue", WAYS)
def test_lazy_text_goes_out_in_the_language_it_was_queued_in(queue):
    with translation.override("ru"):
        queue(
            subject=gettext_lazy("Yes"),
            body=gettext_lazy("No"),
            headers={"X-Answer": gettext_lazy("Yes")},
            html=gettext_lazy("Yes"),
        )
    with translation.override("en"):
        assert send_all().sent == 1
        [sent] = mail.outbox
        assert str(sent.subject) == "\u0414\u0430"  # "Да", not "Yes"
        assert str(sent.body) == "\u041d\u0435\u0442"  # "Нет"
        assert str(sent.extra_headers["X-Answer"]) == "\u0414\u0430"
        assert str(sent.alternatives[0][0]) == "\u0414\u0430"


# Priorities


def test_a_float_priority_is_refused_for_one_message_and_for_a_batch():
    emails = [EmailMultiAlternatives("S", "B", "f@example.org", [GOOD]) for _ in range(3)]
    with pytest.raises(ValueError, match=r"Invalid priority 1\.0"):
        mailer.send_mail("S", "B", "f@example.org", [GOOD], priority=1.0)
    with pytest.raises(ValueError, match=r"Invalid priority 1\.0"):
        make_message("S", "B", "f@example.org", [GOOD], priority=1.0)
    with pytest.raises(ValueError, match=r"Invalid priority 1\.0"):
        DbBackend(priority=1.0).send_messages(emails)  # as get_connection() or a MAILERS OPTIONS entry makes it
    with pytest.raises(ValueError, match=r"Invalid priority 1\.0"):
        enqueue.queue(emails[:1], priority=1.0)
    with pytest.raises(ValueError, match=r"Invalid priority 1\.0"):
        enqueue.queue(emails, priority=1.0)
    assert_nothing_stored()
    # The int itself, and a subclass of int, are fine and stored as int.
    assert enqueue.queue(emails, priority=PRIORITY_HIGH) == 3
    assert set(Message.objects.values_list("priority", flat=True)) == {PRIORITY_HIGH}


def test_mail_queued_as_deferred_stays_deferred_until_retry_deferred():
    """2.3.2 queued priority 4 / "deferred" as deferred mail; so do we (docs/usage.rst says so)."""
    mailer.send_mail("one", "B", "f@example.org", [GOOD], priority=PRIORITY_DEFERRED)
    DbBackend(priority=PRIORITY_DEFERRED).send_messages([EmailMultiAlternatives("two", "B", "f@example.org", [GOOD])])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mailer.send_mail("three", "B", "f@example.org", [GOOD], priority="deferred")
    assert [w.category for w in caught] == [DeprecationWarning]
    assert list(Message.objects.values_list("priority", flat=True)) == [PRIORITY_DEFERRED] * 3

    assert send_all().sent == 0
    assert mail.outbox == []
    assert Message.objects.retry_deferred() == 3
    assert send_all().sent == 3
    assert sorted(m.subject for m in mail.outbox) == ["one", "three", "two"]


# The size of a row on MySQL/MariaDB

MiB = 1024 * 1024


def attached(size, subject="big"):
    email = EmailMultiAlternatives(subject, "B", "f@example.org", [GOOD])
    email.attach("data.bin", os.urandom(size), "application/octet-stream")
    return email


@pytest.mark.django_db(transaction=True)
def test_a_message_over_max_allowed_packet_is_refused_with_a_clear_error(packet_limit):
    words = rf"is \d[\d,]* bytes.*max_allowed_packet.*{packet_limit:,} bytes.*store large attachments elsewhere"
    with pytest.raises(ValueError, match=words):
        attached(20 * MiB).send()
    with pytest.raises(ValueError, match=words):
        DbBackend().send_messages([attached(10, "fine"), attached(20 * MiB), attached(10, "fine too")])
    with pytest.raises(ValueError, match=words):
        make_message("S", "B", "f@example.org", [GOOD], attachments=[("d.bin", os.urandom(20 * MiB), None)])
    assert_nothing_stored()  # and the connection still works


@pytest.mark.django_db(transaction=True)
def test_a_batch_over_max_allowed_packet_is_stored_in_several_statements(packet_limit):
    size = packet_limit // 3  # each message fits, the three together do not
    assert DbBackend().send_messages([attached(size, f"part {i}") for i in range(3)]) == 3
    assert Message.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_max_allowed_packet_is_read_once_per_connection(packet_limit):
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            attached(100 * 1024).send()  # large enough to be checked
    assert [q["sql"] for q in queries if "max_allowed_packet" in q["sql"]] == ["SELECT @@max_allowed_packet"]


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"])
def test_unicode_line_breaks_in_a_subject_are_refused_through_both_ways(char):
    """NEL, U+2028 and U+2029 are line breaks to the email package's modern policy (Django 6 sends with it):
    such a subject queued and then failed at every send. Refused at the door, nothing stored."""
    subject = f"first{char}second"
    with pytest.raises(ValueError, match="newlines"):
        mailer.send_mail(subject, "body", "from@example.org", ["to@example.org"])
    with pytest.raises(ValueError, match="newlines"):
        mail.send_mail(subject, "body", "from@example.org", ["to@example.org"])
    assert not Message.objects.exists()
