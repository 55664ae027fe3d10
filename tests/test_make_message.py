"""Building messages to queue: ``make_message()``, ``filter_recipient_list()``, ``get_message_id()``."""

import pytest

from mailer import models
from mailer.models import (
    PRIORITY_HIGH,
    PRIORITY_MEDIUM,
    Message,
    get_message_id,
)
from tests.support.emails import make_email
from tests.support.queueing import block

pytestmark = pytest.mark.django_db


def test_make_message_unsaved_and_filtered():
    block("blocked@example.org")
    message = models.make_message(
        subject="S",
        body="B",
        from_email="from@example.org",
        to=["ok@example.org", "BLOCKED@example.org"],
        bcc=["blocked@example.org", "hidden@example.org"],
        headers={"X-Key": "v"},
        priority=PRIORITY_HIGH,
    )

    assert message.pk is None
    assert Message.objects.count() == 0
    assert message.priority == PRIORITY_HIGH
    email = message.email
    assert email.subject == "S" and email.body == "B" and email.from_email == "from@example.org"
    assert email.to == ["ok@example.org"]
    assert email.bcc == ["hidden@example.org"]
    assert email.extra_headers == {"X-Key": "v", "Message-ID": get_message_id(email)}

    message.save()
    assert Message.objects.get().email.to == ["ok@example.org"]


def test_make_message_defaults():
    message = models.make_message()
    assert message.pk is None
    assert message.priority == PRIORITY_MEDIUM
    email = message.email
    assert (email.subject, email.body, email.to, email.bcc) == ("", "", [], [])


def test_make_message_attachments():
    message = models.make_message(to=["a@example.org"], attachments=[("a.txt", "text", "text/plain")])
    message.save()
    assert [tuple(a) for a in Message.objects.get().email.attachments] == [("a.txt", "text", "text/plain")]


def test_filter_recipient_list():
    block("b@example.org")
    block("Dee@Example.org")
    assert models.filter_recipient_list(["a@example.org", "B@example.org", "c@example.org", "dee@example.org"]) == [
        "a@example.org",
        "c@example.org",
    ]
    assert models.filter_recipient_list(["Bee <b@example.org>", "Ay <a@example.org>"]) == ["Ay <a@example.org>"]
    assert models.filter_recipient_list([]) == []
    assert models.filter_recipient_list(None) is None


def test_filter_recipient_list_without_entries():
    assert models.filter_recipient_list(["a@example.org", "b@example.org"]) == ["a@example.org", "b@example.org"]


@pytest.mark.parametrize("name", ["Message-ID", "message-id", "MESSAGE-ID", "Message-Id"])
def test_get_message_id(name):
    assert get_message_id(make_email(headers={name: "<id@example.org>", "X-Other": "1"})) == "<id@example.org>"


def test_get_message_id_missing():
    assert get_message_id(make_email(headers={"X-Other": "1"})) is None
