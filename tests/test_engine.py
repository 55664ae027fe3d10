"""``mailer.engine``: what one ``send_all()`` pass does, the error handling, the lock and ``send_loop()``.

The real sender is Django's locmem backend (``tests/settings.py``): ``mail.outbox`` holds what was sent.
Backends and error handlers that misbehave on purpose are in ``tests/support/backends.py``.
"""

import datetime
import logging
import os
import pickle
import re
import smtplib
import time
import types
from base64 import b64encode

import lockfile
import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.test import override_settings
from django.utils import timezone

import mailer
from mailer.engine import acquire_lock, handle_delivery_exception, prioritize, release_lock, send_all, send_loop
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    Message,
    MessageLog,
    get_message_id,
    make_message,
)
from mailer.routing import mailers_configured
from tests.support.backends import HANDLED, HERE, FailingBackend, sent_subjects
from tests.support.locks import lock_held_elsewhere
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

# --- Helpers ----------------------------------------------------------------------------------------

BASE_TIME = timezone.now() - datetime.timedelta(hours=1)


def at(minutes):
    """``minutes`` after BASE_TIME: the ``when_added`` of a message in the tests' timeline."""
    return BASE_TIME + datetime.timedelta(minutes=minutes)


def records(caplog, level, text):
    return [r for r in caplog.records if r.levelno == level and text in r.getMessage()]


# --- Order ------------------------------------------------------------------------------------------


def queue_mixed():
    """Priorities and ages interleaved, so that neither insertion order nor id order is the send order."""
    queue("low-old", priority=PRIORITY_LOW, added=at(0))
    queue("medium-new", priority=PRIORITY_MEDIUM, added=at(50))
    queue("high-new", priority=PRIORITY_HIGH, added=at(40))
    queue("deferred-oldest", priority=PRIORITY_DEFERRED, added=at(-10))
    queue("medium-old", priority=PRIORITY_MEDIUM, added=at(10))
    queue("high-old", priority=PRIORITY_HIGH, added=at(20))
    queue("low-new", priority=PRIORITY_LOW, added=at(30))


EXPECTED_ORDER = ["high-old", "high-new", "medium-old", "medium-new", "low-old", "low-new"]


def test_send_all_order_high_medium_low_oldest_first_never_deferred():
    queue_mixed()
    result = send_all()
    assert sent_subjects() == EXPECTED_ORDER
    assert result.sent == 6
    assert [m.subject for m in Message.objects.all()] == ["deferred-oldest"]
    assert Message.objects.get().priority == PRIORITY_DEFERRED


def test_send_all_with_queryset_keeps_order_and_skips_deferred():
    queue_mixed()
    chosen = Message.objects.filter(
        pk__in=[m.pk for m in Message.objects.all() if m.subject in ("low-new", "high-new", "deferred-oldest")]
    )
    # An order given by the caller does not change the send order.
    send_all(chosen.order_by("-when_added"))
    assert sent_subjects() == ["high-new", "low-new"]
    left = sorted(m.subject for m in Message.objects.all())
    assert left == sorted(["low-old", "medium-new", "medium-old", "high-old", "deferred-oldest"])


def test_send_all_with_only_deferred_in_queryset_sends_nothing():
    queue_mixed()
    result = send_all(Message.objects.deferred())
    assert mail.outbox == []
    assert result.sent == 0
    assert Message.objects.count() == 7


def test_prioritize():
    queue_mixed()
    assert [m.subject for m in prioritize()] == EXPECTED_ORDER
    assert [m.subject for m in prioritize(Message.objects.filter(priority__in=[PRIORITY_LOW, PRIORITY_DEFERRED]))] == [
        "low-old",
        "low-new",
    ]
    assert list(prioritize(Message.objects.deferred())) == []


# --- What a sent message leaves behind ------------------------------------------------------------------


def test_sent_message_gets_message_id_is_deleted_and_logged():
    """A row stored without a Message-ID (as django-mailer 2.x queued them) gets one when it is sent."""
    queued = queue(email=EmailMessage("hello", "body", "from@example.com", ["to@example.com"]), added=BASE_TIME)
    assert get_message_id(queued.email) is None
    send_all()

    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    message_id = get_message_id(sent)
    assert message_id and re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", message_id)
    assert "Message-ID: " + message_id in sent.message().as_string()
    assert not Message.objects.filter(pk=queued.pk).exists()

    log = MessageLog.objects.get()
    assert log.result == RESULT_SUCCESS
    assert log.message_id == message_id
    assert log.when_added == queued.when_added
    assert log.priority == PRIORITY_MEDIUM
    # The log keeps the email as it was sent, Message-ID included.
    assert log.email.subject == "hello"
    assert log.email.to == ["to@example.com"]
    assert get_message_id(log.email) == message_id


def test_existing_message_id_is_kept():
    queue("has id", headers={"message-id": "<custom.1@example.com>"}, added=BASE_TIME)
    send_all()
    sent = mail.outbox[0]
    assert get_message_id(sent) == "<custom.1@example.com>"
    assert [k for k in sent.extra_headers if k.lower() == "message-id"] == ["message-id"]
    assert sent.message().get_all("Message-ID") == ["<custom.1@example.com>"]
    log = MessageLog.objects.get()
    assert log.message_id == "<custom.1@example.com>"
    assert get_message_id(log.email) == "<custom.1@example.com>"


def test_each_message_gets_its_own_message_id():
    for n in range(3):
        queue(f"m{n}", added=at(n))
    send_all()
    ids = [get_message_id(email) for email in mail.outbox]
    assert len(set(ids)) == 3 and None not in ids
    assert sorted(MessageLog.objects.values_list("message_id", flat=True)) == sorted(ids)


def test_log_keeps_headers_the_backend_added(settings):
    settings.MAILER_EMAIL_BACKEND = f"{HERE}.HeaderAddingBackend"
    queue("stamp me", added=BASE_TIME)
    send_all()
    assert mail.outbox[0].extra_headers["X-Backend-Stamp"] == "stamped"
    log = MessageLog.objects.get()
    assert log.email.extra_headers["X-Backend-Stamp"] == "stamped"
    assert get_message_id(log.email) == get_message_id(mail.outbox[0])


def test_log_message_data_false_keeps_metadata_only(settings):
    settings.MAILER_EMAIL_LOG_MESSAGE_DATA = False
    queue("secret", added=BASE_TIME)
    send_all()
    log = MessageLog.objects.get()
    assert log.result == RESULT_SUCCESS
    assert log.message_data is None
    assert log.email is None
    assert log.message_id == get_message_id(mail.outbox[0])
    assert log.message_id


# --- Delivery control -------------------------------------------------------------------------------


def test_max_batch_stops_after_n_sends_and_next_run_sends_the_rest(settings):
    settings.MAILER_EMAIL_MAX_BATCH = 2
    for n in range(5):
        queue(f"m{n}", added=at(n))
    assert send_all().sent == 2
    assert sent_subjects() == ["m0", "m1"]
    assert Message.objects.count() == 3
    send_all()
    assert sent_subjects() == ["m0", "m1", "m2", "m3"]
    send_all()
    assert sent_subjects() == ["m0", "m1", "m2", "m3", "m4"]
    assert Message.objects.count() == 0
    assert send_all().sent == 0


@pytest.mark.parametrize(
    ("reply", "counts"),
    [
        pytest.param((451, b"4.3.0 try again later"), (2, 1, 0), id="transient"),
        pytest.param((550, b"5.1.1 no such user"), (2, 0, 1), id="permanent"),
    ],
)
def test_max_batch_counts_successful_sends_only(settings, failures, reply, counts):
    settings.MAILER_EMAIL_MAX_BATCH = 2
    failures["refused"] = smtplib.SMTPRecipientsRefused({"to@example.com": reply})
    queue("refused", priority=PRIORITY_HIGH, added=BASE_TIME)
    for n in range(4):
        queue(f"m{n}", added=at(n))
    result = send_all()
    assert (result.sent, result.deferred, result.failed) == counts
    assert sent_subjects() == ["m0", "m1"]


def test_max_deferred_stops_the_run_with_a_warning(legacy_policy, failures, caplog):
    """2.3.2's MAILER_EMAIL_MAX_DEFERRED, with 2.3.2's policy (every failure deferred: ``legacy_policy``)."""
    settings = legacy_policy
    settings.MAILER_EMAIL_MAX_DEFERRED = 2
    for n in range(3):
        failures[f"bad{n}"] = smtplib.SMTPRecipientsRefused({"to@example.com": (550, b"no")})
        queue(f"bad{n}", added=at(n))
    queue("good", added=at(10))
    with caplog.at_level(logging.INFO, logger="mailer"):
        result = send_all()
    assert result.deferred == 2
    assert mail.outbox == []
    warnings = records(caplog, logging.WARNING, "EMAIL_MAX_DEFERRED")
    assert len(warnings) == 1 and "stopping for this round" in warnings[0].getMessage()
    assert sorted(m.subject for m in Message.objects.deferred()) == ["bad0", "bad1"]
    assert sorted(m.subject for m in Message.objects.non_deferred()) == ["bad2", "good"]


def test_max_deferred_counts_messages_left_waiting_for_a_retry(settings, failures, caplog):
    """With the default policy, a transient failure is what counts as deferred: it stops the run the same way."""
    settings.MAILER_EMAIL_MAX_DEFERRED = 2
    for n in range(3):
        failures[f"bad{n}"] = smtplib.SMTPRecipientsRefused({"to@example.com": (451, b"4.3.0 later")})
        queue(f"bad{n}", added=at(n))
    queue("good", added=at(10))
    with caplog.at_level(logging.INFO, logger="mailer"):
        result = send_all()
    assert result.deferred == 2
    assert mail.outbox == []
    warnings = records(caplog, logging.WARNING, "EMAIL_MAX_DEFERRED")
    assert len(warnings) == 1 and "stopping for this round" in warnings[0].getMessage()
    assert sorted(m.subject for m in Message.objects.waiting_for_retry()) == ["bad0", "bad1"]
    assert sorted(m.subject for m in Message.objects.due()) == ["bad2", "good"]
    assert not Message.objects.deferred().exists()


def test_throttle_sleeps_between_messages(settings):
    settings.MAILER_EMAIL_THROTTLE = 0.05
    for n in range(4):
        queue(f"m{n}", added=at(n))
    started = time.monotonic()
    send_all()
    elapsed = time.monotonic() - started
    assert sent_subjects() == ["m0", "m1", "m2", "m3"]
    assert elapsed >= 3 * 0.05


def test_settings_are_read_at_call_time():
    for n in range(3):
        queue(f"m{n}", added=at(n))
    with override_settings(MAILER_EMAIL_MAX_BATCH=1):
        send_all()
    assert sent_subjects() == ["m0"]
    with override_settings(MAILER_EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend"):
        send_all()  # "sends" through the dummy backend: logged and deleted, nothing in the outbox
    assert sent_subjects() == ["m0"]
    assert Message.objects.count() == 0
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 3


# --- Errors -----------------------------------------------------------------------------------------

DEFERRABLE = [
    pytest.param(smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), id="auth"),
    pytest.param(smtplib.SMTPDataError(554, b"5.6.0 rejected"), id="data"),
    pytest.param(smtplib.SMTPRecipientsRefused({"to@example.com": (550, b"no such user")}), id="recipients"),
    pytest.param(smtplib.SMTPSenderRefused(553, b"sender not allowed", "from@example.com"), id="sender"),
    pytest.param(OSError("network is unreachable"), id="oserror"),
    pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
    pytest.param(TimeoutError("timed out"), id="timeout"),
]


@pytest.mark.parametrize("exc", DEFERRABLE)
def test_handle_delivery_exception_defers_and_logs(exc):
    message = queue("to defer", added=BASE_TIME)
    connection = LocmemBackend()
    assert handle_delivery_exception(connection, message, exc) == (None, "deferred")
    message.refresh_from_db()
    assert message.priority == PRIORITY_DEFERRED
    log = MessageLog.objects.get()
    assert log.result == RESULT_FAILURE
    assert log.log_message == str(exc)
    assert log.email.subject == "to defer"


@pytest.mark.parametrize("exc", [ValueError("bad value"), KeyError("x"), RuntimeError("other")])
def test_handle_delivery_exception_reraises_anything_else(exc):
    message = queue("stays", added=BASE_TIME)
    with pytest.raises(type(exc)) as raised:
        handle_delivery_exception(LocmemBackend(), message, exc)
    assert raised.value is exc
    message.refresh_from_db()
    assert message.priority == PRIORITY_MEDIUM
    assert MessageLog.objects.count() == 0


# What the default policy makes of each (mailer.failures.classify()), and the text its log entry holds.
RETRIED_OR_DROPPED = {
    "auth": ("transient", "535 5.7.8 bad credentials"),
    "data": ("permanent", "554 5.6.0 rejected"),
    "recipients": ("permanent", "to@example.com: 550 no such user"),
    "sender": ("permanent", "553 sender not allowed"),
    "oserror": ("transient", "OSError: network is unreachable"),
    "refused": ("transient", "ConnectionRefusedError: [Errno 111] Connection refused"),
    "timeout": ("transient", "TimeoutError: timed out"),
}


@pytest.mark.parametrize("exc", DEFERRABLE)
def test_send_all_retries_or_drops_a_failed_message_and_goes_on(request, failures, exc):
    """2.3.2 deferred all of these; now a transient one waits for its retry, a permanent one leaves the queue."""
    kind, reason = RETRIED_OR_DROPPED[request.node.callspec.id]
    failures["fails"] = exc
    queue("fails", priority=PRIORITY_HIGH, added=BASE_TIME)
    queue("fine", added=BASE_TIME)
    before = timezone.now()
    result = send_all()
    assert sent_subjects() == ["fine"]
    failure = MessageLog.objects.get(result=RESULT_FAILURE)
    assert reason in failure.log_message
    assert failure.email.subject == "fails"
    assert not Message.objects.deferred().exists()
    if kind == "transient":
        assert (result.sent, result.deferred, result.failed) == (1, 1, 0)
        waiting = Message.objects.get()
        assert (waiting.priority, waiting.attempts, waiting.last_error) == (PRIORITY_HIGH, 1, reason)
        assert waiting.not_before > before
        assert "trying again at" in failure.log_message
        assert list(Message.objects.waiting_for_retry()) == [waiting]
    else:
        assert (result.sent, result.deferred, result.failed) == (1, 0, 1)
        assert not Message.objects.exists()
        assert "trying again" not in failure.log_message


def test_custom_error_handler_gets_connection_message_exc_and_sent_is_honoured(settings, failures):
    settings.MAILER_ERROR_HANDLER = f"{HERE}.handler_says_sent"
    exc = smtplib.SMTPDataError(554, b"rejected")
    failures["handled"] = exc
    handled = queue("handled", priority=PRIORITY_HIGH, added=BASE_TIME)
    queue("after", added=BASE_TIME)
    result = send_all()

    assert len(HANDLED) == 1
    connection, message, got = HANDLED[0]
    assert isinstance(connection, FailingBackend)
    assert isinstance(message, Message) and message.pk == handled.pk
    assert got is exc
    # "sent": gone from the queue and logged as sent, like a delivered message.
    assert (result.sent, result.deferred) == (2, 0)
    assert Message.objects.count() == 0
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 2
    assert sent_subjects() == ["after"]


def test_custom_error_handler_deferred_is_honoured(settings, failures):
    settings.MAILER_ERROR_HANDLER = f"{HERE}.handler_says_deferred"
    failures["handled"] = OSError("down")
    handled = queue("handled", priority=PRIORITY_HIGH, added=BASE_TIME)
    queue("after", added=BASE_TIME)
    result = send_all()
    assert (result.sent, result.deferred) == (1, 1)
    assert sent_subjects() == ["after"]
    # The handler decides what happens to the message: this one left it queued, and it is tried once per run.
    assert len(HANDLED) == 1
    assert list(Message.objects.values_list("pk", "priority")) == [(handled.pk, PRIORITY_HIGH)]
    assert MessageLog.objects.filter(result=RESULT_FAILURE).count() == 0
    send_all()
    assert len(HANDLED) == 2


def test_poison_message_at_head_is_put_aside_and_the_rest_goes_next_run(failures):
    failures["poison"] = ValueError("cannot encode this one")
    poison = queue("poison", priority=PRIORITY_HIGH, added=BASE_TIME)
    for n in range(50):
        queue(f"good{n}", added=at(n))

    with pytest.raises(ValueError, match="cannot encode this one"):
        send_all()
    assert mail.outbox == []
    poison.refresh_from_db()
    assert poison.priority == PRIORITY_DEFERRED
    log = MessageLog.objects.get()
    assert log.result == RESULT_FAILURE
    assert "Traceback (most recent call last)" in log.log_message
    assert "ValueError: cannot encode this one" in log.log_message
    assert log.email.subject == "poison"

    result = send_all()
    assert result.sent == 50
    assert sent_subjects() == [f"good{n}" for n in range(50)]
    assert list(Message.objects.values_list("pk", flat=True)) == [poison.pk]
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 50


def test_a_backend_that_cannot_be_set_up_stops_the_run_and_blames_no_message(settings):
    settings.MAILER_EMAIL_BACKEND = f"{HERE}.MisconfiguredBackend"
    queued = [queue("first", added=BASE_TIME), queue("second", added=at(1))]
    with pytest.raises(ImproperlyConfigured, match="API key"):
        send_all()
    assert [(m.pk, m.priority) for m in Message.objects.order_by("pk")] == [(m.pk, PRIORITY_MEDIUM) for m in queued]
    assert MessageLog.objects.count() == 0


def test_messages_sent_before_a_poison_message_are_not_resent(failures):
    failures["poison"] = ValueError("boom")
    for n in range(5):
        queue(f"first{n}", priority=PRIORITY_HIGH, added=at(n))
    queue("poison", priority=PRIORITY_MEDIUM, added=BASE_TIME)
    for n in range(5):
        queue(f"then{n}", priority=PRIORITY_MEDIUM, added=at(n + 1))

    with pytest.raises(ValueError):
        send_all()
    assert sent_subjects() == [f"first{n}" for n in range(5)]
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 5
    assert Message.objects.count() == 6

    send_all()
    assert sent_subjects() == [f"first{n}" for n in range(5)] + [f"then{n}" for n in range(5)]
    assert [m.subject for m in Message.objects.all()] == ["poison"]
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 10


# --- Undecodable data -------------------------------------------------------------------------------

DISCARDED = "message discarded due to failure in converting from DB"


def test_empty_message_data_is_dropped_with_a_warning(caplog):
    empty = Message.objects.create(message_data="", priority=PRIORITY_HIGH)
    queue("good", added=BASE_TIME)
    with caplog.at_level(logging.WARNING, logger="mailer"):
        send_all()
    assert len(records(caplog, logging.WARNING, DISCARDED)) == 1
    assert sent_subjects() == ["good"]
    assert not Message.objects.filter(pk=empty.pk).exists()
    assert list(MessageLog.objects.values_list("result", flat=True)) == [RESULT_SUCCESS]


def tampered(message):
    """The message's signed data with one character of its payload changed."""
    data = message.message_data
    assert data.startswith("mailer:v1:")
    i = len("mailer:v1:") + 40
    return data[:i] + ("A" if data[i] != "A" else "B") + data[i + 1 :]


class _Evil:
    def __reduce__(self):
        return (os.mkdir, (EVIL_PATH,))


EVIL_PATH = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"mailer-test-evil-{os.getpid()}")


@pytest.mark.parametrize("kind", ["garbage", "legacy-code-execution"])
def test_corrupt_message_data_is_logged_removed_and_the_run_goes_on(kind, caplog):
    if kind == "garbage":
        data = "garbage!!"
    else:
        data = b64encode(pickle.dumps(_Evil())).decode()  # a 2.x-style unsigned row that would run code
    queue("before", priority=PRIORITY_HIGH, added=BASE_TIME)
    corrupt = Message.objects.create(message_data=data, when_added=BASE_TIME)
    queue("after", added=at(5))

    with caplog.at_level(logging.WARNING, logger="mailer"):
        result = send_all()

    assert len(records(caplog, logging.WARNING, DISCARDED)) == 1
    assert sent_subjects() == ["before", "after"]
    assert Message.objects.count() == 0
    failure = MessageLog.objects.get(result=RESULT_FAILURE)
    assert failure.message_data == data
    assert failure.when_added == corrupt.when_added
    assert DISCARDED in failure.log_message
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 2
    assert (result.sent, result.failed) == (2, 1)
    assert not os.path.exists(EVIL_PATH)


def test_tampered_signed_data_is_held_back_and_the_run_goes_on(caplog):
    """A signed row whose signature no key of ours matches looks exactly like a row queued with another
    SECRET_KEY (issue 12 item 3): it is left queued, never unpickled, and reported, not discarded."""
    data = tampered(make_message(subject="tampered", to=["to@example.com"]))
    queue("before", priority=PRIORITY_HIGH, added=at(0))
    held = Message.objects.create(message_data=data, when_added=BASE_TIME)
    queue("after", added=at(5))

    with caplog.at_level(logging.WARNING, logger="mailer"):
        result = send_all()

    assert records(caplog, logging.WARNING, DISCARDED) == []
    [error] = records(caplog, logging.ERROR, "held back")
    assert "SECRET_KEY_FALLBACKS" in error.getMessage()
    assert sent_subjects() == ["before", "after"]
    assert list(Message.objects.values_list("pk", "message_data")) == [(held.pk, data)]
    assert not MessageLog.objects.filter(result=RESULT_FAILURE).exists()
    assert (result.sent, result.failed, result.held) == (2, 0, 1)
    assert str(result).startswith("sent 2, deferred 0, skipped 0, failed 0, held back 1 in ")


# --- Configuration ----------------------------------------------------------------------------------


def test_backend_loop_is_refused(settings):
    settings.MAILER_EMAIL_BACKEND = "mailer.backend.DbBackend"
    queued = queue("stays queued", added=BASE_TIME)
    with pytest.raises(ImproperlyConfigured) as raised:
        send_all()
    text = str(raised.value)
    assert "MAILER_EMAIL_BACKEND" in text
    if mailers_configured():
        assert "MAILER_DELIVER_USING" in text
    else:
        assert re.search(r"(?<!MAILER_)EMAIL_BACKEND", text)
    assert "mailer.backend.DbBackend" in text
    assert list(Message.objects.values_list("pk", flat=True)) == [queued.pk]
    assert MessageLog.objects.count() == 0


# --- The file lock ----------------------------------------------------------------------------------


def test_acquire_and_release_lock(lock_path):
    acquired, lock = acquire_lock()
    try:
        assert acquired is True
        assert isinstance(lock, lockfile.FileLock)
        assert lock.path == lock_path
        assert lock.is_locked() and lock.i_am_locking()
        assert os.path.exists(lock_path + ".lock")
    finally:
        release_lock(lock)
    assert not lock.is_locked()
    assert not os.path.exists(lock_path + ".lock")


def test_send_all_releases_the_lock(lock_path):
    queue("m", added=BASE_TIME)
    send_all()
    assert not lockfile.FileLock(lock_path).is_locked()
    acquired, lock = acquire_lock()
    assert acquired
    release_lock(lock)


def test_lock_held_elsewhere_sends_nothing(lock_path, caplog):
    queue("waits", added=BASE_TIME)
    with lock_held_elsewhere(lock_path):
        acquired, lock = acquire_lock()
        assert acquired is False
        with caplog.at_level(logging.INFO, logger="mailer"):
            assert send_all() is None
        # Still held by its owner: we did not break or release it.
        assert lockfile.FileLock(lock_path).is_locked()
    assert mail.outbox == []
    assert Message.objects.count() == 1
    assert MessageLog.objects.count() == 0
    assert [r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("mailer")]


def test_lock_wait_timeout_waits_then_gives_up(settings, lock_path, caplog):
    settings.MAILER_LOCK_WAIT_TIMEOUT = 0.6
    queue("waits", added=BASE_TIME)
    with lock_held_elsewhere(lock_path):
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="mailer"):
            assert send_all() is None
        elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 10
    assert mail.outbox == []
    assert Message.objects.count() == 1
    assert [r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("mailer")]


def test_lock_wait_timeout_gets_the_lock_when_it_is_released_in_time(settings, lock_path):
    settings.MAILER_LOCK_WAIT_TIMEOUT = 10
    queue("waits", added=BASE_TIME)
    with lock_held_elsewhere(lock_path, hold=0.5):
        started = time.monotonic()
        result = send_all()
        elapsed = time.monotonic() - started
    assert result is not None and result.sent == 1
    assert sent_subjects() == ["waits"]
    assert 0.3 <= elapsed < 10


def test_no_file_lock_needs_no_lock(settings, lock_path):
    settings.MAILER_USE_FILE_LOCK = False
    queue("goes", added=BASE_TIME)
    with lock_held_elsewhere(lock_path):
        result = send_all()
        assert lockfile.FileLock(lock_path).is_locked()
    assert result.sent == 1
    assert sent_subjects() == ["goes"]


# --- Through real SMTP ------------------------------------------------------------------------------


def test_one_smtp_connection_is_reused_for_many_messages(smtp_settings):
    smtp_server = smtp_settings
    for n in range(20):
        queue(f"m{n}", added=at(n))
    assert send_all().sent == 20
    received = smtp_server.wait_for(20)
    assert [r.message["Subject"] for r in received] == [f"m{n}" for n in range(20)]
    assert smtp_server.connections == 1
    # The Message-ID the engine set is the one that went over the wire, and the one logged.
    wire_ids = sorted(r.message["Message-ID"] for r in received)
    assert wire_ids == sorted(MessageLog.objects.values_list("message_id", flat=True))


def test_smtp_failure_drops_the_message_and_a_new_connection_is_opened(smtp_settings):
    """554 at DATA is permanent: logged with the reply and removed; the next message goes on a new connection."""
    smtp_server = smtp_settings
    accept = smtp_server.handle_DATA

    async def reject_some(server, session, envelope):
        if b"Subject: reject me" in envelope.content:
            return "554 5.6.0 rejected by test"
        return await accept(server, session, envelope)

    smtp_server.handle_DATA = reject_some  # aiosmtpd looks the hooks up on each new connection

    queue("first", priority=PRIORITY_HIGH, added=BASE_TIME)
    rejected = queue("reject me", priority=PRIORITY_MEDIUM, added=BASE_TIME)
    queue("last", priority=PRIORITY_LOW, added=BASE_TIME)
    result = send_all()

    assert (result.sent, result.deferred, result.failed) == (2, 0, 1)
    assert [r.message["Subject"] for r in smtp_server.messages] == ["first", "last"]
    assert smtp_server.connections == 2
    assert not Message.objects.filter(pk=rejected.pk).exists()
    failure = MessageLog.objects.get(result=RESULT_FAILURE)
    assert "554 5.6.0 rejected by test" in failure.log_message
    assert failure.subject == "reject me"


def test_smtp_server_down_holds_back_the_first_message_and_leaves_the_rest_queued(smtp_settings):
    """Connection refused (transient): one attempt per pass, and that message waits for its retry; the other
    messages wait, untouched, for the next pass."""
    smtp_server = smtp_settings
    smtp_server.stop()
    for n in range(3):
        queue(f"m{n}", added=at(n))
    result = send_all()
    assert (result.sent, result.deferred) == (0, 1)
    [waiting] = Message.objects.waiting_for_retry()
    assert (waiting.subject, waiting.attempts) == ("m0", 1)
    assert [m.subject for m in Message.objects.due().order_by("when_added")] == ["m1", "m2"]
    assert Message.objects.filter(attempts=0).count() == 2
    assert not Message.objects.deferred().exists()
    assert MessageLog.objects.filter(result=RESULT_FAILURE).count() == 1


# --- send_loop ----------------------------------------------------------------------------------------


# send_loop() calls close_old_connections(), which closes a connection held in a test's transaction.
LOOP_DB = pytest.mark.django_db(transaction=True)


class StopLoop(BaseException):
    pass


@pytest.fixture
def loop_clock(monkeypatch, settings):
    """Replace ``time.sleep`` (which the loop calls, as 2.x's did) with one that runs test callbacks.

    ``sleeps`` records each sleep; ``on_sleep`` (a list of callables, one per sleep on an empty queue) acts,
    e.g. queues more mail; once they are used up the loop is stopped by raising ``StopLoop``.
    """
    settings.MAILER_EMPTY_QUEUE_SLEEP = 7
    clock = types.SimpleNamespace(sleeps=[], on_sleep=[], queue_empty_at_sleep=[])

    def sleep(seconds):
        clock.sleeps.append(seconds)
        empty = not Message.objects.non_deferred().exists()
        clock.queue_empty_at_sleep.append(empty)
        if empty:
            if not clock.on_sleep:
                raise StopLoop
            clock.on_sleep.pop(0)()
        if len(clock.sleeps) > 50:
            raise AssertionError("send_loop keeps sleeping")

    monkeypatch.setattr(time, "sleep", sleep)
    return clock


@LOOP_DB
def test_send_loop_sends_then_sleeps_on_an_empty_queue(loop_clock):
    for n in range(3):
        queue(f"m{n}", added=at(n))
    loop_clock.on_sleep = [lambda: queue("arrived later", added=at(100))]
    with pytest.raises(StopLoop):
        send_loop()
    assert sent_subjects() == ["m0", "m1", "m2", "arrived later"]
    assert Message.objects.count() == 0
    assert loop_clock.sleeps and set(loop_clock.sleeps) == {7}


@LOOP_DB
def test_send_loop_waits_while_only_deferred_mail_is_queued(loop_clock):
    queue("deferred", priority=PRIORITY_DEFERRED, added=BASE_TIME)
    loop_clock.on_sleep = [lambda: None, lambda: queue("new", added=BASE_TIME)]
    with pytest.raises(StopLoop):
        send_loop()
    assert sent_subjects() == ["new"]
    assert [m.subject for m in Message.objects.all()] == ["deferred"]
    assert loop_clock.sleeps.count(7) >= 3


@LOOP_DB
def test_send_loop_carries_on_after_a_poison_message(loop_clock, failures, caplog):
    failures["poison"] = ValueError("poisoned")
    queue("poison", priority=PRIORITY_HIGH, added=BASE_TIME)
    for n in range(3):
        queue(f"good{n}", added=at(n))
    with caplog.at_level(logging.ERROR, logger="mailer"), pytest.raises(StopLoop):
        send_loop(carry_on=True)  # as runmailer runs it
    assert sent_subjects() == ["good0", "good1", "good2"]
    assert [m.subject for m in Message.objects.all()] == ["poison"]
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)


@LOOP_DB
def test_send_loop_called_as_2_x_called_it_ends_at_a_poison_message_as_2_x_did(loop_clock, failures):
    failures["poison"] = ValueError("poisoned")
    queue("poison", priority=PRIORITY_HIGH, added=BASE_TIME)
    queue("good", added=at(1))
    with pytest.raises(ValueError, match="poisoned"):
        send_loop()
    assert loop_clock.sleeps == []
    assert sent_subjects() == []


@LOOP_DB
def test_send_loop_stops_on_a_backend_loop(settings, loop_clock):
    settings.MAILER_EMAIL_BACKEND = "mailer.backend.DbBackend"
    queue("m", added=BASE_TIME)
    with pytest.raises(ImproperlyConfigured):
        send_loop()


def test_mailer_send_mail_then_send_all_end_to_end():
    assert mailer.send_mail("subject", "body", "from@example.com", ["a@example.com", "b@example.com"]) == 1
    send_all()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["a@example.com", "b@example.com"]
    assert mail.outbox[0].body == "body"
