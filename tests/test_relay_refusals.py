"""Recipients a relay refuses are recorded, and those refused as "too many" get the mail in more transactions.

Django's SMTP backend drops the refused-recipients result of ``smtplib.SMTP.sendmail()``. The relay here
is a real SMTP server on loopback (tests/support/relays.py) scripted to refuse some recipients.
"""

import smtplib

import pytest
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

import mailer
from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog
from mailer.routing import mailers_configured
from tests.support.relays import ScriptedRelay, send_through

pytestmark = pytest.mark.django_db

SENDER = "from@example.com"


@pytest.mark.parametrize("connections", [1, 3])
def test_a_recipient_refused_with_550_is_recorded_with_the_reply(settings, connections):
    settings.MAILER_SENDER_CONNECTIONS = connections
    with ScriptedRelay(refuse={"bob@example.com": "550 5.1.1 <bob@example.com>: no such user"}) as relay:
        send_through(settings, relay)
        recipients = ["ann@example.com", "bob@example.com", "cat@example.com"]
        mailer.send_mail("three", "body", SENDER, recipients)
        mailer.send_mail("one", "body", SENDER, ["dan@example.com"])
        result = send_all()

    assert sorted(relay.received()) == ["ann@example.com", "cat@example.com", "dan@example.com"]
    assert result.sent == 2
    assert not Message.objects.exists()
    success = MessageLog.objects.get(result=RESULT_SUCCESS, message_data__isnull=False, log_message__contains="bob")
    assert "bob@example.com" in success.log_message and "550" in success.log_message
    assert "no such user" in success.log_message
    assert "ann@example.com" not in success.log_message
    # Requeuing the failure entry would send to the refused recipient only.
    failure = MessageLog.objects.get(result=RESULT_FAILURE)
    assert failure.email.to == ["bob@example.com"]
    assert failure.email.subject == "three"
    assert "550 5.1.1" in failure.log_message
    assert failure.message_id == success.message_id
    # The message with no refusal is logged as before.
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 2
    assert MessageLog.objects.get(result=RESULT_SUCCESS, log_message="").email.to == ["dan@example.com"]


def test_150_recipients_to_a_relay_taking_100_per_transaction_all_get_it_once(settings):
    recipients = [f"r{n:03}@example.com" for n in range(150)]
    with ScriptedRelay(max_recipients=100) as relay:
        send_through(settings, relay)
        mailer.send_mail("many", "body", SENDER, recipients)
        result = send_all()

    assert result.sent == 1
    assert [len(t.rcpt_tos) for t in relay.transactions] == [100, 50]
    received = relay.received()
    assert sorted(received) == recipients  # each exactly once
    assert not MessageLog.objects.filter(result=RESULT_FAILURE).exists()
    assert MessageLog.objects.get(result=RESULT_SUCCESS).log_message == ""


def test_too_many_and_a_hard_refusal_together(settings):
    """5 recipients, 2 per transaction, one refused for good: 4 get it once, in 3 transactions; one is recorded."""
    recipients = ["a@example.com", "b@example.com", "x@example.com", "c@example.com", "d@example.com"]
    with ScriptedRelay(refuse={"x@example.com": "550 5.7.1 rejected"}, max_recipients=2) as relay:
        send_through(settings, relay)
        mailer.send_mail("mixed", "body", SENDER, recipients)
        send_all()

    assert sorted(relay.received()) == ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
    assert [len(t.rcpt_tos) for t in relay.transactions] == [2, 2]
    failure = MessageLog.objects.get(result=RESULT_FAILURE)
    assert failure.email.to == ["x@example.com"]
    assert "550 5.7.1 rejected" in failure.log_message


def test_every_recipient_refused_for_good_removes_the_message_with_the_reply(settings):
    with ScriptedRelay(refuse={"bob@example.com": "550 5.1.1 no such user"}) as relay:
        send_through(settings, relay)
        mailer.send_mail("only bob", "body", SENDER, ["bob@example.com"])
        result = send_all()

    assert (result.sent, result.deferred, result.failed) == (0, 0, 1)
    assert relay.transactions == []
    assert not Message.objects.exists()
    failure = MessageLog.objects.get()
    assert failure.result == RESULT_FAILURE
    assert failure.email.to == ["bob@example.com"]
    assert "bob@example.com: 550 5.1.1 no such user" in failure.log_message


@pytest.mark.parametrize("reply", ["550 5.1.1 no such user", "451 4.3.0 try again later"])
def test_every_recipient_refused_defers_the_message_as_before_with_the_legacy_policy(legacy_policy, reply):
    """MAILER_RETRY_MAX_ATTEMPTS=1 + MAILER_DEFER_PERMANENT_FAILURES=True (``legacy_policy``) is 2.3.2's
    behaviour: the message refused by every recipient is deferred, counted as deferred, logged at priority 4."""
    with ScriptedRelay(refuse={"bob@example.com": reply}) as relay:
        send_through(legacy_policy, relay)
        mailer.send_mail("only bob", "body", SENDER, ["bob@example.com"])
        result = send_all()

    assert (result.sent, result.deferred, result.failed) == (0, 1, 0)
    assert relay.transactions == []
    deferred = Message.objects.deferred().get()
    assert (deferred.attempts, deferred.not_before) == (1, None)
    assert reply in deferred.last_error
    failure = MessageLog.objects.get()
    assert (failure.result, failure.priority) == (RESULT_FAILURE, PRIORITY_DEFERRED)
    assert reply in failure.log_message


class RelayBackend(SMTPBackend):
    """A project's own subclass of Django's SMTP backend, with a connection class of its own."""

    @property
    def connection_class(self):
        return CountingSMTP


class CountingSMTP(smtplib.SMTP):
    opened = 0

    def connect(self, *args, **kwargs):
        CountingSMTP.opened += 1
        return super().connect(*args, **kwargs)


def test_a_subclass_of_the_smtp_backend_records_refusals_too(settings):
    CountingSMTP.opened = 0
    with ScriptedRelay(refuse={"bob@example.com": "550 5.1.1 no such user"}, max_recipients=1) as relay:
        send_through(settings, relay)
        path = f"{__name__}.RelayBackend"
        if mailers_configured():
            settings.MAILERS = {**settings.MAILERS, "relay": {**settings.MAILERS["relay"], "BACKEND": path}}
        else:
            settings.MAILER_EMAIL_BACKEND = path
        mailer.send_mail("sub", "body", SENDER, ["ann@example.com", "bob@example.com", "cat@example.com"])
        send_all()

    assert CountingSMTP.opened == 1  # its own connection class was used
    assert relay.received() == ["ann@example.com", "cat@example.com"]
    assert MessageLog.objects.get(result=RESULT_FAILURE).email.to == ["bob@example.com"]


def test_a_later_transaction_that_fails_records_its_recipients_and_sends_nobody_twice(settings):
    """2 recipients per transaction; the second transaction's DATA gets 451: the third recipient is recorded,
    and kept queued alone for a retry that sends to nobody else."""
    recipients = ["a@example.com", "b@example.com", "c@example.com"]
    with ScriptedRelay(max_recipients=2, fail_data_after=(1, "451 4.3.0 try again later")) as relay:
        send_through(settings, relay)
        mailer.send_mail("partly", "body", SENDER, recipients)
        result = send_all()

        assert relay.received() == ["a@example.com", "b@example.com"]
        assert (result.sent, result.deferred) == (1, 0)  # counted sent: a and b have it
        failure = MessageLog.objects.get(result=RESULT_FAILURE)
        assert failure.email.to == ["c@example.com"]
        assert "refused c@example.com: 451 4.3.0 try again later" in failure.log_message
        assert "trying again at" in failure.log_message
        waiting = Message.objects.waiting_for_retry().get()
        assert (waiting.email.to, waiting.attempts) == (["c@example.com"], 1)
        assert "451 4.3.0" in waiting.last_error

        relay.fail_data_after = None
        assert send_all().sent == 0  # not before its time
        Message.objects.update(not_before=None)
        assert send_all().sent == 1
    assert relay.received() == ["a@example.com", "b@example.com", "c@example.com"]
    assert not Message.objects.exists()
