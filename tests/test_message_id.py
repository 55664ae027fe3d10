"""The Message-ID is given when a message is queued and stored with it: every attempt to send it carries the same one.

Each way into the queue stores one; an email's own Message-ID (any case of the header name) is kept; the
caller's ``EmailMessage`` is not changed; a message whose DATA a real relay refused, sent again, goes out
with the Message-ID the refused attempt carried; ``MAILER_ADD_MESSAGE_ID = False`` adds none anywhere.
"""

import email
import re

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.mail.utils import DNS_NAME
from django.core.management import call_command

import mailer
from mailer import enqueue
from mailer.backend import DbBackend
from mailer.engine import send_all
from mailer.message_ids import get_message_id
from mailer.models import RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog, make_message
from tests.support.relays import ScriptedRelay, send_through

pytestmark = pytest.mark.django_db

SENDER = "from@example.org"
TO = ["to@example.org"]


def _django_send(headers=None):
    return EmailMessage("s", "b", SENDER, TO, headers=headers).send()


def _html(headers=None):
    return mailer.send_html_mail("s", "b", "<p>b</p>", SENDER, TO, headers=headers)


def _make_message(headers=None):
    make_message("s", "b", SENDER, TO, headers=headers).save()
    return 1


def _backend_batch(headers=None):
    emails = [EmailMessage(f"s{n}", "b", SENDER, TO, headers=headers) for n in range(3)]
    return DbBackend().send_messages(emails)


# name -> function(headers=None) that queues through that entry point and returns how many messages it queued.
TAKING_HEADERS = {
    "EmailMessage.send": _django_send,
    "mailer.send_html_mail": _html,
    "make_message": _make_message,
    "DbBackend.send_messages": _backend_batch,
}
WAYS = {
    **TAKING_HEADERS,
    "django.core.mail.send_mail": lambda: mail.send_mail("s", "b", SENDER, TO),
    "django.core.mail.send_mass_mail": lambda: mail.send_mass_mail([("a", "b", SENDER, TO), ("c", "d", SENDER, TO)]),
    "django.core.mail.mail_admins": lambda: mail.mail_admins("s", "b") or 1,
    "mailer.send_mail": lambda: mailer.send_mail("s", "b", SENDER, TO),
    "mailer.send_mass_mail": lambda: mailer.send_mass_mail([("a", "b", SENDER, TO), ("c", "d", SENDER, TO)]),
    "mailer.mail_admins": lambda: mailer.mail_admins("s", "b"),
    "mailer.mail_managers": lambda: mailer.mail_managers("s", "b"),
    "enqueue.queue": lambda: enqueue.queue([EmailMessage("s", "b", SENDER, TO)]),
}

# What django.core.mail.make_msgid(domain=DNS_NAME) makes.
GENERATED = re.compile(rf"<[^<>@\s]+@{re.escape(str(DNS_NAME))}>")


@pytest.fixture(autouse=True)
def _site_addresses(settings):
    settings.ADMINS = settings.MANAGERS = [("Admin", "admin@example.org")]


def stored_ids() -> list[str | None]:
    return [get_message_id(message.email) for message in Message.objects.order_by("pk")]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_every_way_into_the_queue_stores_a_message_id(way):
    queued = way()

    ids = stored_ids()
    assert len(ids) == queued >= 1
    assert all(GENERATED.fullmatch(message_id or "") for message_id in ids), ids
    assert len(set(ids)) == len(ids)  # each message its own


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_the_stored_message_id_is_the_one_sent_and_logged(way):
    way()
    ids = stored_ids()
    assert send_all().sent == len(ids)

    assert [get_message_id(sent) for sent in mail.outbox] == ids
    logged = MessageLog.objects.filter(result=RESULT_SUCCESS).order_by("pk").values_list("message_id", flat=True)
    assert list(logged) == ids


@pytest.mark.parametrize("name", ["Message-ID", "message-id", "MESSAGE-ID", "Message-Id"])
@pytest.mark.parametrize("way", TAKING_HEADERS.values(), ids=TAKING_HEADERS.keys())
def test_an_email_with_its_own_message_id_keeps_it(way, name):
    headers = {name: "<own.1@example.org>", "X-Other": "1"}
    way(headers=dict(headers))

    for message in Message.objects.all():
        assert message.email.extra_headers == headers  # no second Message-ID under another spelling
    send_all()
    for sent in mail.outbox:
        assert sent.message().get_all("Message-ID") == ["<own.1@example.org>"]


def test_the_callers_email_is_not_changed_and_queuing_it_again_gives_a_new_id():
    """Django's SMTP backend leaves the email it sends as it was; so does queueing, which stores a copy."""
    headers = {"X-Tag": "t"}
    message = EmailMessage("s", "b", SENDER, ["ann@example.org"], headers=headers)
    message.send()
    message.to = ["bob@example.org"]  # the same object reused for another message
    message.send()

    assert message.extra_headers == {"X-Tag": "t"} and headers == {"X-Tag": "t"}
    first, second = stored_ids()
    assert first and second and first != second  # not one id for two different messages


def test_make_message_gives_the_unsaved_message_an_id_without_changing_the_headers_given():
    headers = {"X-Tag": "t"}
    message = make_message("s", "b", SENDER, TO, headers=headers)

    assert message.pk is None
    assert GENERATED.fullmatch(get_message_id(message.email))
    assert headers == {"X-Tag": "t"}
    message.save()
    assert stored_ids() == [get_message_id(message.email)]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_without_add_message_id_none_is_added_when_queued_or_sent(settings, way):
    settings.MAILER_ADD_MESSAGE_ID = False
    queued = way()

    assert stored_ids() == [None] * queued
    assert send_all().sent == queued
    assert [get_message_id(sent) for sent in mail.outbox] == [None] * queued
    assert set(MessageLog.objects.values_list("message_id", flat=True)) == {None}


def test_an_email_queued_twice_through_one_backend_call_gets_two_ids():
    message = EmailMessage("s", "b", SENDER, TO)
    assert DbBackend().send_messages([message, message]) == 2
    first, second = stored_ids()
    assert first and second and first != second


# --- Sent again after the relay refused it --------------------------------------------------------------------


class RecordingRelay(ScriptedRelay):
    """A :class:`ScriptedRelay` that also keeps the data of every DATA it answered, refused ones too."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attempts: list[tuple[str, bytes]] = []  # (reply, data)

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        with self._cond:
            self.attempts.append((reply, envelope.content))
        return reply


def message_id_of(data: bytes) -> str:
    return email.message_from_bytes(data)["Message-ID"]


@pytest.mark.parametrize(
    "queue",
    [lambda: mailer.send_mail("s", "b", SENDER, TO), _django_send],
    ids=["mailer.send_mail", "EmailMessage.send"],
)
def test_a_message_refused_at_data_then_accepted_arrives_with_the_id_the_refused_attempt_had(settings, queue):
    with RecordingRelay(fail_data_after=(0, "451 4.3.0 Temporary local problem, try again later")) as relay:
        send_through(settings, relay)
        queue()
        [stored] = stored_ids()
        send_all()
        assert [reply[:3] for reply, _ in relay.attempts] == ["451"]
        assert Message.objects.count() == 1  # kept for another attempt
        assert MessageLog.objects.get(result=RESULT_FAILURE).message_id == stored

        relay.fail_data_after = None  # the relay takes mail again
        call_command("retry_deferred")
        call_command("send_mail")
        relay.wait_for(1)

    [(_, refused), (accepted_reply, accepted)] = relay.attempts
    assert accepted_reply.startswith("250")
    assert message_id_of(refused) == message_id_of(accepted) == stored
    assert not Message.objects.exists()
    assert MessageLog.objects.get(result=RESULT_SUCCESS).message_id == stored
