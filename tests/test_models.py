"""mailer.models: constants, tables, Message, its manager, MessageLog, DontSendEntry."""

import datetime

import pytest
from django.core.mail import EmailMultiAlternatives
from django.utils.timezone import now

from mailer.models import (
    PRIORITIES,
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MAPPING,
    PRIORITY_MEDIUM,
    RESULT_CODES,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
    email_to_db,
)
from tests.support.emails import make_email
from tests.support.queueing import block, queue

pytestmark = pytest.mark.django_db


# Constants


def test_priority_constants():
    assert (PRIORITY_HIGH, PRIORITY_MEDIUM, PRIORITY_LOW, PRIORITY_DEFERRED) == (1, 2, 3, 4)
    assert dict(PRIORITIES) == {1: "high", 2: "medium", 3: "low", 4: "deferred"}
    assert [value for value, _label in PRIORITIES] == [1, 2, 3, 4]
    assert PRIORITY_MAPPING == {"high": 1, "medium": 2, "low": 3, "deferred": 4}


def test_result_constants():
    assert (RESULT_SUCCESS, RESULT_DONT_SEND, RESULT_FAILURE) == ("1", "2", "3")
    assert [code for code, _label in RESULT_CODES] == ["1", "2", "3"]
    assert dict(RESULT_CODES) == {"1": "success", "2": "don't send", "3": "failure"}


def test_tables_and_fields():
    assert Message._meta.db_table == "mailer_message"
    assert MessageLog._meta.db_table == "mailer_messagelog"
    assert DontSendEntry._meta.db_table == "mailer_dontsendentry"
    assert Message._meta.get_field("id").get_internal_type() == "BigAutoField"
    assert Message._meta.get_field("priority").default == PRIORITY_MEDIUM
    assert Message._meta.get_field("retry_count").default == 0
    assert MessageLog._meta.get_field("message_data").null
    assert not MessageLog._meta.get_field("message_id").editable
    assert MessageLog._meta.get_field("when_added").db_index
    assert MessageLog._meta.get_field("priority").db_index
    assert MessageLog._meta.get_field("result").max_length == 1
    assert DontSendEntry._meta.get_field("to_address").max_length == 254


# Message


def test_message_defaults():
    before = now()
    message = queue(email=make_email())
    message.refresh_from_db()
    assert message.priority == PRIORITY_MEDIUM
    assert message.retry_count == 0
    assert before <= message.when_added <= now()


def test_message_email_round_trip_through_the_database():
    email = EmailMultiAlternatives(
        "Sübject ✓",
        "Bödy",
        "Sender <from@example.org>",
        ["to@example.org"],
        bcc=["bcc@example.org"],
        cc=["cc@example.org"],
        reply_to=["reply@example.org"],
        headers={"X-Custom": "yes", "Message-ID": "<abc@example.org>"},
    )
    email.attach_alternative("<p>Bödy</p>", "text/html")
    email.attach("data.bin", bytes(range(256)), "application/octet-stream")
    message = Message()
    message.email = email
    message.save()

    loaded = Message.objects.get(pk=message.pk).email
    assert isinstance(loaded, EmailMultiAlternatives)
    assert loaded.subject == "Sübject ✓"
    assert loaded.body == "Bödy"
    assert loaded.from_email == "Sender <from@example.org>"
    assert (loaded.to, loaded.cc, loaded.bcc, loaded.reply_to) == (
        ["to@example.org"],
        ["cc@example.org"],
        ["bcc@example.org"],
        ["reply@example.org"],
    )
    assert loaded.extra_headers == {"X-Custom": "yes", "Message-ID": "<abc@example.org>"}
    assert [tuple(a) for a in loaded.alternatives] == [("<p>Bödy</p>", "text/html")]
    assert [tuple(a) for a in loaded.attachments] == [("data.bin", bytes(range(256)), "application/octet-stream")]


def test_message_email_setter_replaces_data():
    message = queue(email=make_email("First"))
    first_data = message.message_data
    message.email = make_email("Second")
    assert message.message_data != first_data
    assert message.email.subject == "Second"
    message.save()
    assert Message.objects.get(pk=message.pk).subject == "Second"


def test_message_email_follows_message_data_changes():
    message = queue(email=make_email("First"))
    assert message.email.subject == "First"
    message.message_data = email_to_db(make_email("Changed"))
    assert message.email.subject == "Changed"
    message.message_data = ""
    assert message.email is None


def test_message_email_does_not_store_the_connection():
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("backend instances cannot be pickled")

    email = make_email()
    conn = Unpicklable()
    email.connection = conn
    message = queue(email=email)
    assert email.connection is conn  # the caller's object is left as it was
    assert Message.objects.get(pk=message.pk).email.connection is None


def test_message_to_addresses_and_subject():
    message = queue(email=make_email("Greetings", to=["a@example.org", "Bee <b@example.org>"]))
    message = Message.objects.get(pk=message.pk)
    assert message.to_addresses == ["a@example.org", "Bee <b@example.org>"]
    assert message.subject == "Greetings"


@pytest.mark.parametrize("data", ["", "this is not an email", "mailer:v1:Zm9v:bad-signature", "gASVAAAA"])
def test_message_with_undecodable_data(data):
    message = Message.objects.create(message_data=data)
    message = Message.objects.get(pk=message.pk)
    assert message.email is None
    assert message.to_addresses == []
    assert message.subject == ""
    assert str(message) == "<Message repr unavailable>"


def test_message_str():
    message = queue(email=make_email("Hi there", to=["a@example.org", "b@example.org"]))
    assert str(message) == f'On {message.when_added}, "Hi there" to a@example.org, b@example.org'


def test_message_defer():
    message = queue(email=make_email(), priority=PRIORITY_HIGH)
    message.defer()
    assert message.priority == PRIORITY_DEFERRED
    message.refresh_from_db()
    assert message.priority == PRIORITY_DEFERRED
    assert list(Message.objects.deferred()) == [message]
    assert list(Message.objects.non_deferred()) == []


def test_mark_deferred_defers_the_rows_by_key(django_assert_num_queries):
    chosen = queue(email=make_email(), priority=PRIORITY_HIGH)
    other = queue(email=make_email(), priority=PRIORITY_LOW)

    with django_assert_num_queries(1):  # one UPDATE, no read
        assert Message.objects.filter(pk=chosen.pk).mark_deferred() == 1

    assert list(Message.objects.deferred()) == [chosen]
    other.refresh_from_db()
    assert other.priority == PRIORITY_LOW


# Message.objects


def test_message_manager_filters():
    high = queue(email=make_email(), priority=PRIORITY_HIGH)
    medium = queue(email=make_email(), priority=PRIORITY_MEDIUM)
    low = queue(email=make_email(), priority=PRIORITY_LOW)
    deferred = queue(email=make_email(), priority=PRIORITY_DEFERRED)

    assert list(Message.objects.high_priority()) == [high]
    assert list(Message.objects.medium_priority()) == [medium]
    assert list(Message.objects.low_priority()) == [low]
    assert list(Message.objects.deferred()) == [deferred]
    assert set(Message.objects.non_deferred()) == {high, medium, low}
    # They chain like queryset methods.
    assert list(Message.objects.filter(pk__in=[high.pk, low.pk]).non_deferred().low_priority()) == [low]


def test_retry_deferred():
    deferred = [queue(email=make_email(), priority=PRIORITY_DEFERRED) for _ in range(3)]
    other = queue(email=make_email(), priority=PRIORITY_LOW)

    assert Message.objects.retry_deferred() == 3

    for message in deferred:
        message.refresh_from_db()
        assert message.priority == PRIORITY_MEDIUM
        assert message.retry_count == 1
    other.refresh_from_db()
    assert (other.priority, other.retry_count) == (PRIORITY_LOW, 0)
    assert Message.objects.retry_deferred() == 0


def test_retry_deferred_new_priority():
    message = queue(email=make_email(), priority=PRIORITY_DEFERRED)
    assert Message.objects.retry_deferred(new_priority=PRIORITY_HIGH) == 1
    message.refresh_from_db()
    assert message.priority == PRIORITY_HIGH


def test_retry_deferred_increments_each_time():
    message = queue(email=make_email(), priority=PRIORITY_DEFERRED)
    for expected in (1, 2, 3):
        assert Message.objects.retry_deferred() == 1
        message.refresh_from_db()
        assert message.retry_count == expected
        message.defer()


def test_retry_deferred_unlimited_by_default(settings):
    settings.MAILER_EMAIL_MAX_RETRIES = None
    message = queue(email=make_email(), priority=PRIORITY_DEFERRED, retry_count=1000)
    assert Message.objects.retry_deferred() == 1
    message.refresh_from_db()
    assert (message.priority, message.retry_count) == (PRIORITY_MEDIUM, 1001)


def test_retry_deferred_max_retries_zero_never_retries(settings):
    settings.MAILER_EMAIL_MAX_RETRIES = 0
    message = queue(email=make_email(), priority=PRIORITY_DEFERRED)
    assert Message.objects.retry_deferred() == 0
    message.refresh_from_db()
    assert (message.priority, message.retry_count) == (PRIORITY_DEFERRED, 0)


def test_retry_deferred_max_retries_n(settings):
    settings.MAILER_EMAIL_MAX_RETRIES = 2
    fresh = queue(email=make_email(), priority=PRIORITY_DEFERRED, retry_count=0)
    once = queue(email=make_email(), priority=PRIORITY_DEFERRED, retry_count=1)
    twice = queue(email=make_email(), priority=PRIORITY_DEFERRED, retry_count=2)

    assert Message.objects.retry_deferred() == 2

    for message in (fresh, once, twice):
        message.refresh_from_db()
    assert (fresh.priority, fresh.retry_count) == (PRIORITY_MEDIUM, 1)
    assert (once.priority, once.retry_count) == (PRIORITY_MEDIUM, 2)
    assert (twice.priority, twice.retry_count) == (PRIORITY_DEFERRED, 2)

    # One message, deferred again and again: two retries after the first attempt, then no more.
    settings.MAILER_EMAIL_MAX_RETRIES = 2
    Message.objects.all().delete()
    message = queue(email=make_email(), priority=PRIORITY_DEFERRED)
    results = []
    for _ in range(4):
        results.append(Message.objects.retry_deferred())
        message.defer()
    assert results == [1, 1, 0, 0]
    message.refresh_from_db()
    assert message.retry_count == 2


# MessageLog


def test_message_log_log():
    email = make_email("Logged", headers={"Message-ID": "<log-1@example.org>"})
    message = queue(email=email, priority=PRIORITY_LOW)

    log = MessageLog.objects.log(message, RESULT_FAILURE, log_message="connection refused")

    log = MessageLog.objects.get(pk=log.pk)
    assert log.result == RESULT_FAILURE
    assert log.log_message == "connection refused"
    assert log.message_id == "<log-1@example.org>"
    assert log.priority == PRIORITY_LOW
    assert log.when_added == message.when_added
    assert log.message_data == message.message_data
    assert log.email.subject == "Logged"
    assert abs((now() - log.when_attempted).total_seconds()) < 60


def test_message_log_log_default_log_message_and_no_message_id():
    message = queue(email=make_email())
    log = MessageLog.objects.log(message, RESULT_SUCCESS)
    log.refresh_from_db()
    assert log.log_message == ""
    assert log.message_id is None
    assert log.result == RESULT_SUCCESS


def test_message_log_without_message_data(settings):
    settings.MAILER_EMAIL_LOG_MESSAGE_DATA = False
    message = queue(email=make_email("Secret", headers={"Message-ID": "<m@example.org>"}))
    log = MessageLog.objects.log(message, RESULT_SUCCESS)
    log.refresh_from_db()
    assert log.message_data is None
    assert log.message_id == "<m@example.org>"
    assert log.email is None
    assert log.to_addresses is None
    assert log.subject is None
    assert str(log) == f'On {log.when_attempted}, "<m@example.org>"'


def test_message_log_properties_and_str():
    message = queue(email=make_email("Report", to=["a@example.org", "b@example.org"]))
    log = MessageLog.objects.log(message, RESULT_SUCCESS)
    log = MessageLog.objects.get(pk=log.pk)
    assert log.email.subject == "Report"
    assert log.to_addresses == ["a@example.org", "b@example.org"]
    assert log.subject == "Report"
    assert str(log) == f'On {log.when_attempted}, "Report" to a@example.org, b@example.org'


def test_message_log_str_without_data_or_message_id():
    log = MessageLog.objects.create(
        message_data=None, when_added=now(), priority=PRIORITY_MEDIUM, result=RESULT_SUCCESS, log_message=""
    )
    assert str(log) == f'On {log.when_attempted}, "None"'


def test_str_of_an_email_that_cannot_be_named():
    email = make_email("Report")
    email.to = None  # as a hand-made email may hold it: ", ".join() raises
    log = MessageLog(message_data=email_to_db(email), when_attempted=now())
    assert str(log) == "<MessageLog repr unavailable>"
    assert str(Message(message_data=email_to_db(email), when_added=now())) == "<Message repr unavailable>"


def make_log(days_old, result=RESULT_SUCCESS):
    log = MessageLog.objects.create(
        message_data=email_to_db(make_email()),
        when_added=now() - datetime.timedelta(days=days_old + 1),
        priority=PRIORITY_MEDIUM,
        result=result,
        log_message="",
    )
    # when_attempted has a default, so set the age afterwards.
    MessageLog.objects.filter(pk=log.pk).update(when_attempted=now() - datetime.timedelta(days=days_old))
    return log


def test_purge_old_entries_default_success_only():
    old_success = [make_log(10) for _ in range(2)]
    new_success = make_log(1)
    old_failure = make_log(10, RESULT_FAILURE)
    old_dont_send = make_log(10, RESULT_DONT_SEND)

    assert MessageLog.objects.purge_old_entries(5) == 2

    remaining = set(MessageLog.objects.values_list("pk", flat=True))
    assert remaining == {new_success.pk, old_failure.pk, old_dont_send.pk}
    assert not remaining & {log.pk for log in old_success}


def test_purge_old_entries_result_codes():
    make_log(10)
    old_failure = make_log(10, RESULT_FAILURE)
    new_failure = make_log(1, RESULT_FAILURE)
    old_dont_send = make_log(10, RESULT_DONT_SEND)

    assert MessageLog.objects.purge_old_entries(5, [RESULT_FAILURE]) == 1
    assert not MessageLog.objects.filter(pk=old_failure.pk).exists()
    assert MessageLog.objects.filter(pk=new_failure.pk).exists()
    assert MessageLog.objects.filter(pk=old_dont_send.pk).exists()

    assert MessageLog.objects.purge_old_entries(5, [RESULT_SUCCESS, RESULT_FAILURE, RESULT_DONT_SEND]) == 2
    assert list(MessageLog.objects.values_list("pk", flat=True)) == [new_failure.pk]


def test_purge_old_entries_nothing_to_delete():
    make_log(1)
    assert MessageLog.objects.purge_old_entries(5) == 0
    assert MessageLog.objects.count() == 1


# DontSendEntry


def test_dont_send_entry_has_address_case_insensitive():
    block("Someone@Example.org")
    assert DontSendEntry.objects.has_address("someone@example.org")
    assert DontSendEntry.objects.has_address("SOMEONE@EXAMPLE.ORG")
    assert DontSendEntry.objects.has_address("Someone@Example.org")
    assert not DontSendEntry.objects.has_address("someone@example.com")
    assert not DontSendEntry.objects.has_address("one@example.org")
