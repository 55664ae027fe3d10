"""The default failure policy through ``send_all()``: transient failures wait for a retry, permanent ones leave.

The failing sender is ``FailingBackend`` (tests/support/backends.py) or a real SMTP relay on loopback scripted to
refuse (tests/support/relays.py). Time is not waited for: a test makes a waiting message due by moving its
``not_before`` into the past, as the clock would.
"""

import datetime
import logging
import smtplib

import pytest
from anymail.exceptions import AnymailAPIError
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

import mailer
from mailer import engine
from mailer.engine import send_all
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_MEDIUM,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
)
from tests.support.backends import HANDLED, HERE, sent_subjects
from tests.support.classifiers import HERE as CLASSIFIERS
from tests.support.queueing import queue
from tests.support.relays import ScriptedRelay, send_through

pytestmark = pytest.mark.django_db

GREYLISTED = smtplib.SMTPRecipientsRefused({"to@example.com": (451, b"4.7.1 greylisted, try again later")})
NO_SUCH_USER = smtplib.SMTPDataError(550, b"5.1.1 <to@example.com>: no such user")
SENDER = "from@example.com"


def make_due(*messages: Message) -> None:
    """What the passing of time does to messages waiting for a retry: their ``not_before`` is behind us."""
    past = timezone.now() - datetime.timedelta(seconds=1)
    rows = Message.objects.filter(pk__in=[m.pk for m in messages]) if messages else Message.objects.all()
    assert rows.update(not_before=past) == (len(messages) or rows.count())


def failure_logs() -> list[str]:
    return list(MessageLog.objects.filter(result=RESULT_FAILURE).order_by("pk").values_list("log_message", flat=True))


# --- Transient: waits, then sent --------------------------------------------------------------------


def test_a_transient_failure_waits_for_its_time_then_is_delivered(settings, failures):
    settings.MAILER_RETRY_DELAY = 600  # the first retry within 10 minutes: long after this test ends
    failures["greylisted"] = GREYLISTED
    message = queue("greylisted", priority=PRIORITY_HIGH)
    before = timezone.now()

    result = send_all()

    assert (result.sent, result.deferred, result.failed) == (0, 1, 0)
    message.refresh_from_db()
    assert (message.priority, message.attempts) == (PRIORITY_HIGH, 1)
    assert before < message.not_before <= timezone.now() + datetime.timedelta(seconds=600)
    assert message.last_error == "refused to@example.com: 451 4.7.1 greylisted, try again later"
    [log] = failure_logs()
    assert "451 4.7.1 greylisted" in log and "attempt 1 of 15; trying again at" in log
    assert list(Message.objects.waiting_for_retry()) == [message]
    assert not Message.objects.due().exists()

    # The relay would take it now, but its time has not come: no sender claims it.
    failures.clear()
    assert send_all().sent == 0
    assert mail.outbox == []

    make_due(message)
    result = send_all()
    assert (result.sent, result.deferred) == (1, 0)
    assert sent_subjects() == ["greylisted"]
    assert not Message.objects.exists()
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 1


def test_a_waiting_message_does_not_hold_back_the_rest(failures):
    failures["first"] = GREYLISTED
    queue("first", priority=PRIORITY_HIGH)
    queue("second")
    assert send_all().sent == 1
    queue("third")
    assert send_all().sent == 1
    assert sent_subjects() == ["second", "third"]
    assert [m.subject for m in Message.objects.all()] == ["first"]


def test_the_message_keeps_its_message_id_across_attempts(failures):
    failures["again"] = GREYLISTED
    queue("again")
    send_all()
    refused_id = MessageLog.objects.get(result=RESULT_FAILURE).message_id
    failures.clear()
    make_due()
    send_all()
    assert refused_id and mail.outbox[0].extra_headers["Message-ID"] == refused_id


def test_attempts_used_up_make_it_a_permanent_failure(settings, failures):
    settings.MAILER_RETRY_MAX_ATTEMPTS = 3
    failures["doomed"] = GREYLISTED
    message = queue("doomed")
    for attempt in (1, 2):
        result = send_all()
        assert (result.deferred, result.failed) == (1, 0)
        message.refresh_from_db()
        assert message.attempts == attempt
        assert f"attempt {attempt} of 3" in failure_logs()[-1]
        make_due(message)

    result = send_all()

    assert (result.sent, result.deferred, result.failed) == (0, 0, 1)
    assert not Message.objects.exists()
    logs = failure_logs()
    assert len(logs) == 3
    assert "giving up after 3 attempts" in logs[-1] and "451 4.7.1 greylisted" in logs[-1]
    assert "trying again" not in logs[-1]


def test_one_attempt_in_all_means_no_automatic_retry(settings, failures):
    settings.MAILER_RETRY_MAX_ATTEMPTS = 1
    failures["once"] = GREYLISTED
    queue("once")
    assert send_all().failed == 1
    assert not Message.objects.exists()
    assert "giving up after 1 attempts" in failure_logs()[0]


# --- Permanent: leaves the queue ----------------------------------------------------------------------


def test_a_permanent_failure_leaves_the_queue_with_the_reply(failures):
    failures["bounce"] = NO_SUCH_USER
    queue("bounce")
    result = send_all()
    assert (result.sent, result.deferred, result.failed) == (0, 0, 1)
    assert not Message.objects.exists()
    failure = MessageLog.objects.get()
    assert failure.result == RESULT_FAILURE
    assert failure.log_message == "550 5.1.1 <to@example.com>: no such user"
    assert failure.subject == "bounce"
    assert not DontSendEntry.objects.exists()  # MAILER_DONT_SEND_UNKNOWN_RECIPIENTS is off by default


def test_defer_permanent_failures_keeps_them_deferred_with_the_error(settings, failures):
    settings.MAILER_DEFER_PERMANENT_FAILURES = True
    failures["bounce"] = NO_SUCH_USER
    failures["greylisted"] = GREYLISTED
    queue("bounce")
    queue("greylisted")

    result = send_all()

    assert (result.deferred, result.failed) == (2, 0)
    deferred = Message.objects.get(priority=PRIORITY_DEFERRED)
    assert deferred.subject == "bounce"
    assert (deferred.attempts, deferred.not_before) == (1, None)
    assert deferred.last_error == "550 5.1.1 <to@example.com>: no such user"
    # A transient failure is still retried automatically.
    assert Message.objects.waiting_for_retry().get().subject == "greylisted"

    failures.clear()
    assert send_all().sent == 0  # a deferred message waits for retry_deferred, as in 2.3.2
    assert Message.objects.retry_deferred() == 2
    assert send_all().sent == 2
    assert sorted(sent_subjects()) == ["bounce", "greylisted"]


# --- The don't-send list for unknown mailboxes ---------------------------------------------------------


def refusing_relay() -> ScriptedRelay:
    return ScriptedRelay(
        refuse={
            "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown",
            "busy@example.com": "450 4.1.1 <busy@example.com>: try again later",
            "policy@example.com": "550 5.7.1 rejected by policy",
        }
    )


def test_unknown_mailboxes_go_on_the_dont_send_list_once(settings):
    settings.MAILER_DONT_SEND_UNKNOWN_RECIPIENTS = True
    with refusing_relay() as relay:
        send_through(settings, relay)
        mailer.send_mail("partly", "body", SENDER, ["ann@example.com", "gone@example.com", "busy@example.com"])
        mailer.send_mail("only gone", "body", SENDER, ["Gone@Example.com"])
        mailer.send_mail("policy", "body", SENDER, ["policy@example.com"])
        send_all()
    assert list(DontSendEntry.objects.values_list("to_address", flat=True)) == ["gone@example.com"]
    assert relay.received() == ["ann@example.com"]
    # The transiently refused one waits for its retry, alone.
    assert Message.objects.waiting_for_retry().get().to_addresses == ["busy@example.com"]
    # Queued again: the list now drops it.
    mailer.send_mail("later", "body", SENDER, ["gone@example.com"])
    assert all("gone@example.com" not in m.to_addresses for m in Message.objects.all())


def test_a_single_recipient_refused_at_data_as_unknown_goes_on_the_list(settings, failures):
    settings.MAILER_DONT_SEND_UNKNOWN_RECIPIENTS = True
    failures["bounce"] = NO_SUCH_USER
    queue("bounce")
    send_all()
    assert list(DontSendEntry.objects.values_list("to_address", flat=True)) == ["to@example.com"]


def test_unknown_mailboxes_stay_off_the_list_when_the_setting_is_off(settings):
    with refusing_relay() as relay:
        send_through(settings, relay)
        mailer.send_mail("only gone", "body", SENDER, ["gone@example.com"])
        assert send_all().failed == 1
    assert not DontSendEntry.objects.exists()


# --- Some recipients refused --------------------------------------------------------------------------


def test_a_recipient_refused_with_451_is_retried_alone_and_nobody_gets_it_twice(settings):
    with ScriptedRelay(refuse={"bob@example.com": "451 4.3.0 later"}) as relay:
        send_through(settings, relay)
        mailer.send_mail("two", "body", SENDER, ["ann@example.com", "bob@example.com"])

        result = send_all()

        assert (result.sent, result.deferred) == (1, 0)  # sent: ann has it
        assert relay.received() == ["ann@example.com"]
        success = MessageLog.objects.get(result=RESULT_SUCCESS)
        assert success.to_addresses == ["ann@example.com", "bob@example.com"]
        assert "bob@example.com: 451 4.3.0 later" in success.log_message
        failure = MessageLog.objects.get(result=RESULT_FAILURE)
        assert failure.to_addresses == ["bob@example.com"] and "trying again at" in failure.log_message
        waiting = Message.objects.get()
        assert (waiting.to_addresses, waiting.attempts) == (["bob@example.com"], 1)
        assert waiting.not_before > timezone.now()
        assert waiting.last_error == "refused bob@example.com: 451 4.3.0 later"
        assert waiting.email.extra_headers["Message-ID"] == success.message_id

        assert send_all().sent == 0  # not before its time, even with the relay willing
        relay.refuse.clear()
        assert send_all().sent == 0
        make_due(waiting)
        assert send_all().sent == 1

    assert relay.received() == ["ann@example.com", "bob@example.com"]
    assert [t.rcpt_tos for t in relay.transactions] == [["ann@example.com"], ["bob@example.com"]]
    assert not Message.objects.exists()


def test_every_recipient_refused_transiently_waits_with_all_of_them(settings):
    refuse = {"ann@example.com": "451 4.3.0 later", "bob@example.com": "452 4.2.2 mailbox full"}
    with ScriptedRelay(refuse=refuse) as relay:
        send_through(settings, relay)
        mailer.send_mail("two", "body", SENDER, ["ann@example.com", "bob@example.com"])
        result = send_all()
        assert (result.sent, result.deferred, result.failed) == (0, 1, 0)
        waiting = Message.objects.waiting_for_retry().get()
        assert sorted(waiting.to_addresses) == ["ann@example.com", "bob@example.com"]
        relay.refuse.clear()
        make_due(waiting)
        assert send_all().sent == 1
    assert sorted(relay.received()) == ["ann@example.com", "bob@example.com"]


# --- retry_deferred -------------------------------------------------------------------------------------


def test_retry_deferred_makes_waiting_messages_due_at_once_and_counts_them(failures):
    failures["w1"] = failures["w2"] = GREYLISTED
    queue("w1")
    queue("w2")
    queue("deferred", priority=PRIORITY_DEFERRED)
    send_all()
    assert Message.objects.waiting_for_retry().count() == 2
    # Held back for another reason than a failure (no attempt yet): not a retry, left alone.
    later = timezone.now() + datetime.timedelta(hours=1)
    scheduled = queue("scheduled")
    Message.objects.filter(pk=scheduled.pk).update(not_before=later)

    assert Message.objects.retry_deferred() == 3

    assert not Message.objects.waiting_for_retry().exists()
    assert not Message.objects.deferred().exists()
    assert Message.objects.get(pk=scheduled.pk).not_before == later
    failures.clear()
    assert send_all().sent == 3
    assert sorted(sent_subjects()) == ["deferred", "w1", "w2"]


def test_the_retry_deferred_command_counts_waiting_messages_too(failures, caplog):
    failures["w"] = GREYLISTED
    queue("w")
    send_all()
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("retry_deferred")
    lines = [r.getMessage() for r in caplog.records if r.name == "mailer.management.commands.retry_deferred"]
    assert len(lines) == 1 and lines[0].startswith("1 message(s) retried, 0 left deferred"), lines
    assert Message.objects.due().count() == 1


# --- A project's own error handler keeps 2.3.2's contract -------------------------------------------


def test_a_custom_handler_saying_deferred_leaves_the_message_as_it_left_it(settings, failures):
    settings.MAILER_ERROR_HANDLER = f"{HERE}.handler_says_deferred"
    failures["handled"] = GREYLISTED
    message = queue("handled")

    result = send_all()

    assert result.deferred == 1
    assert [got for _, _, got in HANDLED] == [GREYLISTED]
    message.refresh_from_db()
    # Not the default policy's doing: no retry time, no attempt counted, nothing logged by the engine.
    assert (message.priority, message.attempts, message.not_before, message.last_error) == (
        PRIORITY_MEDIUM,
        0,
        None,
        None,
    )
    assert not MessageLog.objects.exists()
    send_all()  # still due: the next pass hands it to the handler again
    assert len(HANDLED) == 2


def test_a_custom_handler_reads_the_rows_retry_fields_though_the_claim_leaves_them_out(settings, failures):
    settings.MAILER_ERROR_HANDLER = f"{HERE}.handler_says_deferred"
    failures["handled"] = GREYLISTED
    message = queue("handled")
    earlier = timezone.now() - datetime.timedelta(minutes=5)
    Message.objects.filter(pk=message.pk).update(not_before=earlier, attempts=2, last_error="421 try later")

    send_all()

    ((_, handled, _),) = HANDLED
    assert (handled.not_before, handled.attempts, handled.last_error) == (earlier, 2, "421 try later")


def test_a_custom_handler_calling_the_default_one_defers_as_2_3_2_did(settings, failures):
    settings.MAILER_ERROR_HANDLER = f"{HERE}.handler_delegates_to_default"
    failures["handled"] = NO_SUCH_USER
    message = queue("handled")

    assert send_all().deferred == 1

    message.refresh_from_db()
    assert (message.priority, message.attempts, message.not_before) == (PRIORITY_DEFERRED, 0, None)
    assert MessageLog.objects.get().log_message == str(NO_SUCH_USER)


# --- Unknown exceptions, the project's classifier ----------------------------------------------------


def test_an_unknown_exception_is_still_a_poison_message(failures):
    failures["poison"] = ValueError("poisoned")
    message = queue("poison")
    with pytest.raises(ValueError, match="poisoned"):
        send_all()
    message.refresh_from_db()
    assert (message.priority, message.attempts, message.not_before) == (PRIORITY_DEFERRED, 0, None)
    [log] = failure_logs()
    assert "Traceback" in log and "ValueError: poisoned" in log


def test_the_project_classifier_turns_an_unknown_exception_into_a_retry(settings, failures):
    settings.MAILER_FAILURE_CLASSIFIER = f"{CLASSIFIERS}.value_errors_are_transient"
    failures["busy"] = ValueError("API busy")
    queue("busy")
    result = send_all()
    assert (result.deferred, result.failed) == (1, 0)
    assert Message.objects.waiting_for_retry().get().last_error == "ValueError: API busy"


def test_the_project_classifier_can_give_up_at_the_first_4xx(settings, failures):
    settings.MAILER_FAILURE_CLASSIFIER = f"{CLASSIFIERS}.greylist_is_permanent"
    failures["greylisted"] = smtplib.SMTPDataError(451, b"4.7.1 greylisted")
    queue("greylisted")
    assert send_all().failed == 1
    assert not Message.objects.exists()


def test_a_broken_classifier_does_not_lose_what_the_batch_sent(settings, failures):
    """Regression: a classifier that raised ended the pass before the batch was recorded (a double send next)."""
    settings.MAILER_FAILURE_CLASSIFIER = f"{CLASSIFIERS}.broken"
    failures["bad"] = GREYLISTED
    queue("good", priority=PRIORITY_HIGH)
    bad = queue("bad")
    send_all()  # the default handler takes over: it defers an SMTP error, as in 2.3.2
    assert sent_subjects() == ["good"]
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 1
    assert list(Message.objects.all()) == [bad]
    assert Message.objects.get().priority == PRIORITY_DEFERRED


def test_an_exception_that_cannot_be_printed_does_not_lose_what_the_batch_sent(failures):
    """Regression: anymail's API error with a status but no response fails in ``str()``; that ended the pass
    before the batch was recorded, so the message sent before it stayed queued and went out again."""
    failures["bad"] = AnymailAPIError("server error", status_code=500)
    queue("good", priority=PRIORITY_HIGH)
    queue("bad")
    result = send_all()
    assert (result.sent, result.deferred) == (1, 1)
    assert not Message.objects.filter(priority=PRIORITY_HIGH).exists()
    assert Message.objects.waiting_for_retry().get().last_error == "AnymailAPIError: ('server error',)"
    send_all()
    assert sent_subjects() == ["good"]


# --- Waking up for the next retry -----------------------------------------------------------------------


def test_idle_wait_is_shortened_to_the_next_retry(failures):
    assert engine.idle_wait(30) == 30
    failures["w"] = GREYLISTED
    queue("w")
    send_all()
    Message.objects.update(not_before=timezone.now() + datetime.timedelta(seconds=5))
    assert 4 < engine.idle_wait(30) <= 5
    assert engine.idle_wait(2) == 2
    make_due()
    assert engine.until_due() is None  # due now: nothing is waiting
