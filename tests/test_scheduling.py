"""Mail due later and mail that expires: ``send_at`` and ``expires_at`` (issue 15).

Time is controlled rather than waited for: the ``clock`` fixture sets what ``django.utils.timezone.now()``
returns to the claim (the time the due rows are compared with) and to the sender's expiry checks, or a
test moves a row's ``not_before``/``expires_at``. Real processes and real clocks: test_scheduling_processes.py.
"""

from __future__ import annotations

import datetime
import logging
import smtplib
import warnings
import zoneinfo

import pytest
from anymail.message import AnymailMessage
from django.core import mail
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.utils import timezone

import mailer
from mailer import enqueue
from mailer import failures as failure_rules
from mailer.backend import DbBackend
from mailer.engine import send_all
from mailer.models import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    Message,
    MessageLog,
    make_message,
)
from tests.support.queueing import assert_nothing_stored
from tests.support.relays import ScriptedRelay, send_through

pytestmark = pytest.mark.django_db

SENDER = "from@example.com"
TO = ["to@example.com"]
UTC = datetime.UTC
ANYMAIL_TEST_BACKEND = "anymail.backends.test.EmailBackend"


class Clock:
    """What ``timezone.now()`` returns while the ``clock`` fixture is in use; ``advance()`` moves it."""

    def __init__(self, now: datetime.datetime):
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta) -> datetime.datetime:
        self.now += datetime.timedelta(**delta)
        return self.now

    def set(self, when: datetime.datetime) -> None:
        self.now = when


@pytest.fixture
def clock(monkeypatch):
    """A controlled clock for the claim and the sender's expiry checks, starting at the real time."""
    controlled = Clock(timezone.now())
    monkeypatch.setattr(timezone, "now", controlled)
    return controlled


def in_(**delta) -> datetime.datetime:
    return timezone.now() + datetime.timedelta(**delta)


def sent_subjects() -> list[str]:
    return [email.subject for email in mail.outbox]


# Queueing: where send_at and expires_at are stored, whichever way the message is queued.


def test_send_mail_stores_send_at_in_not_before_and_expires_at(clock):
    send_at, expires_at = in_(hours=1), in_(hours=2)
    assert mailer.send_mail("later", "body", SENDER, TO, send_at=send_at, expires_at=expires_at) == 1
    message = Message.objects.get()
    assert (message.not_before, message.expires_at) == (send_at, expires_at)
    assert message.attempts == 0
    assert list(Message.objects.scheduled()) == [message]
    assert not Message.objects.due().exists()


def test_send_html_mail_takes_both(clock):
    send_at, expires_at = in_(minutes=5), in_(minutes=15)
    mailer.send_html_mail("html", "text", "<p>html</p>", SENDER, TO, send_at=send_at, expires_at=expires_at)
    message = Message.objects.get()
    assert (message.not_before, message.expires_at) == (send_at, expires_at)
    assert message.email.alternatives[0][1] == "text/html"


def test_send_mass_mail_schedules_every_message_of_the_datatuple():
    send_at, expires_at = in_(hours=1), in_(hours=3)
    datatuple = [(f"mass {n}", "body", SENDER, [f"r{n}@example.com"]) for n in range(3)]
    assert mailer.send_mass_mail(datatuple, send_at=send_at, expires_at=expires_at) == 3
    assert {(m.not_before, m.expires_at) for m in Message.objects.all()} == {(send_at, expires_at)}
    assert Message.objects.scheduled().count() == 3


def test_make_message_returns_a_scheduled_message():
    send_at, expires_at = in_(days=1), in_(days=2)
    message = make_message("made", "body", SENDER, TO, send_at=send_at, expires_at=expires_at)
    assert message.pk is None
    assert (message.not_before, message.expires_at) == (send_at, expires_at)
    message.save()
    assert Message.objects.scheduled().get().pk == message.pk


def test_only_expires_at_leaves_the_message_due_now():
    expires_at = in_(minutes=10)
    mailer.send_mail("code 493021", "body", SENDER, TO, expires_at=expires_at)
    message = Message.objects.get()
    assert (message.not_before, message.expires_at) == (None, expires_at)
    assert Message.objects.due().get() == message


def test_attributes_of_an_email_sent_through_djangos_api_schedule_it():
    send_at, expires_at = in_(hours=1), in_(hours=2)
    email = EmailMessage("attr", "body", SENDER, TO)
    email.send_at = send_at
    email.expires_at = expires_at
    assert email.send() == 1
    message = Message.objects.get()
    assert (message.not_before, message.expires_at) == (send_at, expires_at)
    # The stored email carries neither: the queue honours them, the real backend must not see them.
    stored = message.email
    assert not hasattr(stored, "send_at") and not hasattr(stored, "expires_at")
    # The caller's object is left as it was.
    assert (email.send_at, email.expires_at) == (send_at, expires_at)


def test_each_email_of_a_backend_batch_keeps_its_own_schedule():
    first, second = EmailMessage("first", "b", SENDER, TO), EmailMessage("second", "b", SENDER, TO)
    first.send_at = in_(hours=1)
    second.expires_at = in_(minutes=5)
    third = EmailMessage("third", "b", SENDER, TO)
    assert DbBackend().send_messages([first, second, third]) == 3
    rows = {m.subject: (m.not_before, m.expires_at) for m in Message.objects.all()}
    assert rows == {"first": (first.send_at, None), "second": (None, second.expires_at), "third": (None, None)}


def test_an_anymail_message_queued_with_send_at_is_stored_without_it():
    send_at = in_(hours=1)
    email = AnymailMessage("anymail", "body", SENDER, TO, send_at=send_at, tags=["reminder"])
    email.send()
    message = Message.objects.get()
    assert message.not_before == send_at
    stored = message.email
    assert isinstance(stored, AnymailMessage)
    assert "send_at" not in vars(stored)
    assert stored.tags == ["reminder"]  # the rest of anymail's attributes are kept


def test_an_anymail_message_without_send_at_is_due_now():
    AnymailMessage("anymail", "body", SENDER, TO).send()  # its send_at is anymail's UNSET
    assert Message.objects.get().not_before is None


# Naive datetimes follow USE_TZ, with a warning.


def test_a_naive_datetime_is_taken_in_the_current_time_zone_with_a_warning(settings):
    naive = datetime.datetime(2040, 1, 15, 9, 0)
    with timezone.override(zoneinfo.ZoneInfo("America/New_York")):
        with pytest.warns(RuntimeWarning, match=r"naive datetime 2040-01-15T09:00:00.*USE_TZ.*America/New_York") as w:
            mailer.send_mail("nine in New York", "body", SENDER, TO, send_at=naive)
    assert Message.objects.get().not_before == datetime.datetime(2040, 1, 15, 14, 0, tzinfo=UTC)
    # The warning names the line that queued the message, not this package's code.
    assert w[0].filename == __file__


def test_a_naive_expires_at_warns_too_and_make_message_points_at_its_caller():
    naive = datetime.datetime(2040, 6, 1, 12, 0)
    with timezone.override(zoneinfo.ZoneInfo("Europe/Paris")):
        with pytest.warns(RuntimeWarning, match="expires_at") as w:
            message = make_message("m", "b", SENDER, TO, expires_at=naive)
    assert message.expires_at == datetime.datetime(2040, 6, 1, 10, 0, tzinfo=UTC)
    assert w[0].filename == __file__


def test_aware_datetimes_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mailer.send_mail("aware", "b", SENDER, TO, send_at=in_(hours=1), expires_at=in_(hours=2))


def test_without_time_zone_support_naive_datetimes_are_local_time_and_aware_ones_are_converted(settings):
    settings.USE_TZ = False
    local_now = timezone.now()  # naive, in TIME_ZONE
    assert timezone.is_naive(local_now)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mailer.send_mail("due", "b", SENDER, TO, send_at=local_now - datetime.timedelta(minutes=1))
        mailer.send_mail("later", "b", SENDER, TO, send_at=local_now + datetime.timedelta(hours=1))
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    aware = datetime.datetime(2040, 6, 1, 12, 0, tzinfo=paris)
    mailer.send_mail("aware", "b", SENDER, TO, send_at=aware)
    expected = timezone.make_naive(aware, timezone.get_default_timezone())
    assert Message.objects.order_by("-pk").first().not_before == expected
    assert send_all().sent == 1
    assert sent_subjects() == ["due"]


# Bad values are refused at queue time, and nothing is stored.

BAD_VALUES = [
    ("a-date", datetime.date(2040, 1, 1), TypeError, r"must be a datetime, not date \(a date, not a time"),
    ("an-int-timestamp", 2208988800, TypeError, "must be a datetime, not int"),
    ("a-float", 1.5, TypeError, "must be a datetime, not float"),
    ("an-iso-string", "2040-01-01T09:00:00+00:00", TypeError, "must be a datetime, not str"),
    ("a-timedelta", datetime.timedelta(minutes=5), TypeError, "must be a datetime, not timedelta"),
]


@pytest.mark.parametrize("name", ["send_at", "expires_at"])
@pytest.mark.parametrize(
    "value, exception, words", [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES]
)
def test_what_is_not_a_datetime_is_refused_by_every_way_of_queueing(name, value, exception, words):
    ways = [
        lambda: mailer.send_mail("S", "B", SENDER, TO, **{name: value}),
        lambda: mailer.send_html_mail("S", "B", "<p>B</p>", SENDER, TO, **{name: value}),
        lambda: mailer.send_mass_mail([("S", "B", SENDER, TO)], **{name: value}),
        lambda: mailer.send_mass_mail([], **{name: value}),
        lambda: make_message("S", "B", SENDER, TO, **{name: value}),
    ]
    for way in ways:
        with pytest.raises(exception, match=f"{name} {words}"):
            way()
    assert_nothing_stored()


@pytest.mark.parametrize("name", ["send_at", "expires_at"])
def test_a_backend_batch_with_one_bad_attribute_is_not_stored_at_all(name):
    batch = [EmailMessage(f"fine {n}", "B", SENDER, TO) for n in range(3)]
    setattr(batch[1], name, datetime.date(2040, 1, 1))
    with pytest.raises(TypeError, match=f"{name} must be a datetime, not date"):
        DbBackend().send_messages(batch)
    with pytest.raises(TypeError, match=name):
        batch[1].send()
    assert_nothing_stored()


@pytest.mark.parametrize("gap", [datetime.timedelta(minutes=-1), datetime.timedelta(0)])
def test_a_message_that_would_expire_before_it_is_due_is_refused(gap):
    send_at = in_(hours=1)
    with pytest.raises(ValueError, match="expires_at .* must be after send_at"):
        mailer.send_mail("S", "B", SENDER, TO, send_at=send_at, expires_at=send_at + gap)
    email = EmailMessage("S", "B", SENDER, TO)
    email.send_at, email.expires_at = send_at, send_at + gap
    with pytest.raises(ValueError, match="must be after send_at"):
        email.send()
    assert_nothing_stored()


def test_an_email_attribute_and_the_keyword_together_are_checked_against_each_other():
    """An email's own ``expires_at`` before the ``send_at`` given for the batch is refused as well."""
    email = EmailMessage("S", "B", SENDER, TO)
    email.expires_at = in_(minutes=5)
    with pytest.raises(ValueError, match="must be after send_at"):
        enqueue.queue([email], send_at=in_(hours=1))
    assert_nothing_stored()


# Never before send_at.


def test_a_message_is_not_sent_before_send_at_and_is_sent_from_then_on(clock):
    send_at = clock.now + datetime.timedelta(hours=1)
    mailer.send_mail("later", "b", SENDER, TO, send_at=send_at)
    mailer.send_mail("now", "b", SENDER, TO)
    assert send_all().sent == 1
    assert sent_subjects() == ["now"]
    clock.set(send_at - datetime.timedelta(microseconds=1))
    assert send_all().sent == 0
    clock.set(send_at)
    assert send_all().sent == 1
    assert sent_subjects() == ["now", "later"]
    assert not Message.objects.exists()


def test_send_mail_from_cron_run_again_and_again_sends_it_once_when_due(clock):
    send_at = clock.now + datetime.timedelta(minutes=10)
    mailer.send_mail("at ten past", "b", SENDER, TO, send_at=send_at)
    for _minute in range(10):  # one run a minute, as cron would: nothing is due yet
        call_command("send_mail")
        assert mail.outbox == []
        clock.advance(minutes=1)
    assert clock.now == send_at
    call_command("send_mail")
    assert sent_subjects() == ["at ten past"]
    clock.advance(minutes=1)
    call_command("send_mail")
    assert sent_subjects() == ["at ten past"]


def test_retry_deferred_does_not_make_a_scheduled_message_due(clock):
    mailer.send_mail("scheduled", "b", SENDER, TO, send_at=clock.now + datetime.timedelta(hours=1))
    call_command("retry_deferred")
    assert Message.objects.get().not_before is not None
    assert send_all().sent == 0


def test_a_high_priority_message_due_now_goes_before_a_medium_one_due_earlier(clock):
    start = clock.now
    mailer.send_mail("medium, due first", "b", SENDER, TO, send_at=start + datetime.timedelta(minutes=1))
    mailer.send_mail(
        "low, not due", "b", SENDER, TO, priority=PRIORITY_LOW, send_at=start + datetime.timedelta(hours=1)
    )
    mailer.send_mail(
        "high, due later", "b", SENDER, TO, priority=PRIORITY_HIGH, send_at=start + datetime.timedelta(minutes=2)
    )
    mailer.send_mail("medium, not scheduled", "b", SENDER, TO, priority=PRIORITY_MEDIUM)
    clock.advance(minutes=3)
    assert send_all().sent == 3
    assert sent_subjects() == ["high, due later", "medium, due first", "medium, not scheduled"]
    assert Message.objects.get().subject == "low, not due"


# Expiry.


def expired_log() -> MessageLog:
    log = MessageLog.objects.get(result=RESULT_FAILURE)
    assert log.log_message.startswith("expired:"), log.log_message
    return log


def test_a_message_claimed_after_it_expired_is_never_sent_and_logged_as_expired(clock, caplog):
    expires_at = clock.now + datetime.timedelta(minutes=10)
    mailer.send_mail("code 493021", "b", SENDER, TO, expires_at=expires_at)
    clock.set(expires_at)
    with caplog.at_level(logging.INFO, logger="mailer"):
        result = send_all()
    assert (result.sent, result.failed) == (0, 1)
    assert mail.outbox == []
    assert not Message.objects.exists()
    log = expired_log()
    assert expires_at.isoformat() in log.log_message
    assert log.subject == "code 493021"  # the email is kept in the log, as for any failure
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "expired" in r.getMessage()]
    assert warning and expires_at.isoformat() in warning[0].getMessage()


def test_a_message_claimed_just_before_it_expires_is_sent(clock):
    expires_at = clock.now + datetime.timedelta(minutes=10)
    mailer.send_mail("code", "b", SENDER, TO, expires_at=expires_at)
    clock.set(expires_at - datetime.timedelta(microseconds=1))
    assert send_all().sent == 1
    assert MessageLog.objects.get().result == RESULT_SUCCESS


def test_a_scheduled_message_that_no_sender_reached_in_time_expires(clock):
    send_at = clock.now + datetime.timedelta(minutes=1)
    mailer.send_mail("window", "b", SENDER, TO, send_at=send_at, expires_at=send_at + datetime.timedelta(minutes=1))
    clock.advance(minutes=5)  # the senders were down between send_at and expires_at
    assert send_all().failed == 1
    assert mail.outbox == []
    expired_log()


def test_an_expired_message_leaves_the_queue_even_when_permanent_failures_are_deferred(clock, settings):
    settings.MAILER_DEFER_PERMANENT_FAILURES = True
    mailer.send_mail("gone", "b", SENDER, TO, expires_at=clock.now + datetime.timedelta(seconds=1))
    clock.advance(seconds=2)
    send_all()
    assert not Message.objects.exists()
    expired_log()


def test_an_expires_at_already_past_when_queued_is_accepted_and_expires_at_the_first_claim(clock):
    mailer.send_mail("too late already", "b", SENDER, TO, expires_at=clock.now - datetime.timedelta(seconds=1))
    assert Message.objects.count() == 1
    assert send_all().failed == 1
    assert mail.outbox == []
    expired_log()


def test_a_big_message_expires_too(clock):
    email = EmailMessage("big", "b", SENDER, TO)
    email.attach("big.bin", "x" * (300 * 1024), "text/plain")
    email.expires_at = clock.now + datetime.timedelta(minutes=1)
    email.send()
    clock.advance(minutes=2)
    assert send_all().failed == 1
    assert mail.outbox == []
    assert expired_log().subject == "big"


def test_an_anymail_backend_never_sees_the_send_at_the_queue_honoured(clock, settings):
    settings.MAILER_EMAIL_BACKEND = ANYMAIL_TEST_BACKEND
    send_at = clock.now + datetime.timedelta(minutes=30)
    AnymailMessage("anymail", "b", SENDER, TO, send_at=send_at, metadata={"k": "v"}).send()
    plain = EmailMessage("plain", "b", SENDER, TO)
    plain.send_at = send_at
    plain.send()
    assert send_all().sent == 0
    clock.set(send_at)
    assert send_all().sent == 2
    for sent in mail.outbox:
        assert "send_at" not in sent.anymail_test_params, sent.anymail_test_params  # anymail schedules nothing
        assert not hasattr(sent, "send_at")
    assert mail.outbox[0].anymail_test_params["metadata"] == {"k": "v"}


# Expiry and retries: a next attempt that would come too late is not waited for.


@pytest.fixture
def retry_in_two_minutes(monkeypatch):
    """Every next attempt 120 s after the failure (instead of a random wait)."""
    monkeypatch.setattr(failure_rules, "retry_delay", lambda attempts, rng=None: 120.0)


def test_a_transient_failure_whose_retry_would_come_after_expiry_expires_the_message(
    clock, failures, retry_in_two_minutes
):
    failures["soon"] = smtplib.SMTPDataError(451, b"4.3.0 Try again later")
    failures["later"] = smtplib.SMTPDataError(451, b"4.3.0 Try again later")
    mailer.send_mail("soon", "b", SENDER, TO, expires_at=clock.now + datetime.timedelta(seconds=60))
    mailer.send_mail("later", "b", SENDER, TO, expires_at=clock.now + datetime.timedelta(seconds=600))
    result = send_all()
    assert (result.failed, result.deferred) == (1, 1)
    # "soon" expired instead of waiting for a retry it could not have.
    log = MessageLog.objects.get(log_message__startswith="expired:")
    assert log.subject == "soon"
    next_attempt = clock.now + datetime.timedelta(seconds=120)
    assert next_attempt.isoformat() in log.log_message
    assert "451" in log.log_message and "attempt 1 failed" in log.log_message
    # "later" waits for its retry, which comes before it expires.
    waiting = Message.objects.get()
    assert (waiting.subject, waiting.attempts, waiting.not_before) == ("later", 1, next_attempt)


def test_a_retry_due_exactly_at_expiry_is_not_waited_for(clock, failures, retry_in_two_minutes):
    failures["edge"] = smtplib.SMTPDataError(451, b"4.3.0 Try again later")
    mailer.send_mail("edge", "b", SENDER, TO, expires_at=clock.now + datetime.timedelta(seconds=120))
    assert send_all().failed == 1
    assert not Message.objects.exists()
    expired_log()


def test_a_message_waiting_for_a_retry_expires_when_claimed_too_late(clock, failures, retry_in_two_minutes):
    failures["retried"] = smtplib.SMTPDataError(451, b"4.3.0 Try again later")
    expires_at = clock.now + datetime.timedelta(seconds=150)
    mailer.send_mail("retried", "b", SENDER, TO, expires_at=expires_at)
    assert send_all().deferred == 1
    clock.set(expires_at + datetime.timedelta(seconds=1))  # no sender ran in time for the retry
    del failures["retried"]
    assert send_all().failed == 1
    assert mail.outbox == []
    assert MessageLog.objects.filter(log_message__startswith="expired:").count() == 1


def test_recipients_refused_for_now_are_given_up_when_their_retry_would_come_after_expiry(
    settings, clock, retry_in_two_minutes
):
    refuse = {"bob@example.com": "451 4.2.0 Mailbox busy, try later"}
    with ScriptedRelay(refuse=refuse) as relay:
        send_through(settings, relay)
        recipients = ["ann@example.com", "bob@example.com"]
        mailer.send_mail("short-lived", "b", SENDER, recipients, expires_at=clock.now + datetime.timedelta(seconds=60))
        mailer.send_mail("long-lived", "b", SENDER, recipients, expires_at=clock.now + datetime.timedelta(hours=1))
        result = send_all()
    assert result.sent == 2
    assert sorted(relay.received()) == ["ann@example.com", "ann@example.com"]
    expired = MessageLog.objects.get(log_message__startswith="expired:")
    assert (expired.subject, expired.email.to) == ("short-lived", ["bob@example.com"])
    assert "451 4.2.0" in expired.log_message
    # The long-lived one keeps bob for its retry, the short-lived one left the queue.
    waiting = Message.objects.get()
    assert (waiting.subject, waiting.email.to) == ("long-lived", ["bob@example.com"])
