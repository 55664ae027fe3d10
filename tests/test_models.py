"""mailer.models: constants, Message, MessageLog, DontSendEntry, helpers, serialisation, migrations."""

import base64
import datetime
import io
import os
import pickle
from io import StringIO

import pytest
from django.core import signing
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.utils.timezone import now

from mailer import models, serialization
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
    db_to_email,
    email_to_db,
    get_message_id,
)
from tests.support.pickles import CraftingPickler, Global, dotted_name_exploit, legacy_2x, legacy_raw
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db


def make_email(subject="Hello", to=("to@example.org",), **kwargs):
    return EmailMessage(
        subject, kwargs.pop("body", "Body"), kwargs.pop("from_email", "from@example.org"), list(to), **kwargs
    )


def block(address):
    return DontSendEntry.objects.create(to_address=address, when_added=now())


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


# Helpers


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
    assert email.extra_headers == {"X-Key": "v"}

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


# Serialisation


def test_email_to_db_round_trip():
    email = make_email("Round trip", to=["a@example.org"], cc=["c@example.org"], headers={"X-A": "b"})
    data = email_to_db(email)
    assert isinstance(data, str)
    loaded = db_to_email(data)
    assert isinstance(loaded, EmailMessage)
    assert loaded is not email
    assert (loaded.subject, loaded.body, loaded.to, loaded.cc, loaded.extra_headers) == (
        "Round trip",
        "Body",
        ["a@example.org"],
        ["c@example.org"],
        {"X-A": "b"},
    )
    assert loaded.message().as_bytes() is not None


@pytest.mark.parametrize(
    "obj",
    [
        {"a": 1, "b": [1, 2, 3]},
        ["x", 2, 3.5, None],
        ("tuple", b"\x00\xff"),
        "plain text ✓",
        12345,
        datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        {1, 2, 3},
    ],
    ids=repr,
)
def test_email_to_db_round_trip_of_picklable_objects(obj):
    assert db_to_email(email_to_db(obj)) == obj


@pytest.mark.parametrize("data", ["", None, b""])
def test_db_to_email_empty(data):
    assert db_to_email(data) is None


def test_email_to_db_is_signed_text():
    data = email_to_db(make_email())
    assert data.startswith("mailer:v1:")
    data.encode("ascii")  # safe for any TextField


def test_db_to_email_tampered_signed_data():
    data = email_to_db(make_email("Original"))
    prefix, payload_and_sig = data[: len("mailer:v1:")], data[len("mailer:v1:") :]
    payload, sig = payload_and_sig.rsplit(":", 1)
    replaced = email_to_db(make_email("Evil"))[len("mailer:v1:") :].rsplit(":", 1)[0]

    assert db_to_email(prefix + replaced + ":" + sig) is None  # other payload, old signature
    flipped = payload[:-5] + ("A" if payload[-5] != "A" else "B") + payload[-4:]
    assert db_to_email(prefix + flipped + ":" + sig) is None  # one character changed
    assert db_to_email(prefix + payload) is None  # signature removed
    # The same payload signed with another key.
    foreign = signing.Signer(key="another site's key", salt=serialization.SALT).sign(payload)
    assert db_to_email(prefix + foreign) is None
    # And the untouched data still decodes.
    assert db_to_email(data).subject == "Original"


@pytest.mark.parametrize("key", ["s3cret " * 8, b"bytes key " * 6, "ünïcødé key " * 5])
def test_signature_is_djangos_signer_signature(settings, key):
    """serialization signs without django.core.signing.Signer, for speed, but must sign exactly like it:
    rows already queued, and Django's own fallback-key check, depend on it."""
    settings.SECRET_KEY = key
    data = email_to_db(make_email("Signed"))
    signed = data[len(serialization.PREFIX) :]
    value = signed.rsplit(":", 1)[0]
    assert signed == signing.Signer(salt=serialization.SALT).sign(value)
    assert db_to_email(serialization.PREFIX + signing.Signer(salt=serialization.SALT).sign(value)).subject == "Signed"


def test_tampered_message_is_undecodable():
    message = queue(email=make_email("Original"))
    Message.objects.filter(pk=message.pk).update(message_data=message.message_data[:-3] + "xyz")
    message = Message.objects.get(pk=message.pk)
    assert message.email is None
    assert message.subject == ""
    assert message.to_addresses == []


def test_signed_data_survives_key_rotation(settings):
    settings.SECRET_KEY = "old key " * 8
    data = email_to_db(make_email("Rotated"))

    settings.SECRET_KEY = "new key " * 8
    assert db_to_email(data) is None
    settings.SECRET_KEY_FALLBACKS = ["old key " * 8]
    assert db_to_email(data).subject == "Rotated"


def rich_email():
    email = EmailMultiAlternatives(
        "Legacy sübject",
        "Legacy bödy é",
        "from@example.org",
        ["to@example.org"],
        cc=["cc@example.org"],
        bcc=["bcc@example.org"],
        reply_to=["r@example.org"],
        headers={"X-Legacy": "1"},
    )
    email.attach_alternative("<p>hi</p>", "text/html")
    email.attach("f.bin", b"\x00\x01\xfe\xff", "application/octet-stream")
    return email


def assert_rich_email(loaded):
    assert isinstance(loaded, EmailMultiAlternatives)
    assert loaded.subject == "Legacy sübject"
    assert loaded.body == "Legacy bödy é"
    assert (loaded.to, loaded.cc, loaded.bcc, loaded.reply_to) == (
        ["to@example.org"],
        ["cc@example.org"],
        ["bcc@example.org"],
        ["r@example.org"],
    )
    assert loaded.extra_headers == {"X-Legacy": "1"}
    assert [tuple(a) for a in loaded.alternatives] == [("<p>hi</p>", "text/html")]
    assert [tuple(a) for a in loaded.attachments] == [("f.bin", b"\x00\x01\xfe\xff", "application/octet-stream")]
    # And it still renders into a sendable message.
    assert b"X-Legacy: 1" in loaded.message().as_bytes()


@pytest.mark.parametrize("protocol", [None, 0, 2, pickle.HIGHEST_PROTOCOL])
def test_db_to_email_django_mailer_2x_format(protocol):
    assert_rich_email(db_to_email(legacy_2x(rich_email(), protocol)))


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_db_to_email_raw_pickle_format(protocol):
    assert_rich_email(db_to_email(legacy_raw(rich_email(), protocol)))


def test_db_to_email_raw_pickle_as_bytes():
    assert_rich_email(db_to_email(pickle.dumps(rich_email(), protocol=0)))


def test_db_to_email_legacy_with_pickled_connection():
    """2.x could pickle the backend instance along with the email; it is dropped, not rebuilt."""
    from django.core.mail.backends.locmem import EmailBackend

    email = make_email("With connection")
    # The shape of an email pickled before Django 6.1, which renamed the attribute to ``_connection``.
    email.__dict__.pop("_connection", None)
    email.__dict__["connection"] = EmailBackend()
    loaded = db_to_email(legacy_2x(email))
    assert loaded.subject == "With connection"
    current = serialization._CONNECTION_KEY
    assert {key: vars(loaded)[key] for key in ("connection", "_connection") if key in vars(loaded)} == {current: None}


def test_db_to_email_emails_pickled_before_django_52():
    """Django 4.2 kept alternatives and attachments as plain tuples; Django 6 reads ``.mimetype`` on them."""
    email = EmailMultiAlternatives("Old Django", "Plain", "f@example.org", ["a@example.org"])
    email.__dict__["alternatives"] = [("<p>HTML</p>", "text/html")]
    email.__dict__["attachments"] = [("data.bin", bytes(range(256)), "application/octet-stream")]
    loaded = db_to_email(legacy_2x(email))

    message = loaded.message()
    html = [part for part in message.walk() if part.get_content_type() == "text/html"]
    assert [part.get_payload(decode=True).strip() for part in html] == [b"<p>HTML</p>"]
    attachment = [part for part in message.walk() if part.get_filename() == "data.bin"]
    assert [part.get_payload(decode=True) for part in attachment] == [bytes(range(256))]
    if hasattr(serialization.mail_message, "EmailAlternative"):  # Django 5.2+
        assert loaded.alternatives[0].mimetype == "text/html"
        assert loaded.attachments[0].filename == "data.bin"


@pytest.mark.parametrize("fmt", [legacy_2x, legacy_raw])
def test_legacy_formats_in_the_queue(fmt):
    message = Message.objects.create(message_data=fmt(make_email("Old row", to=["old@example.org"])))
    message = Message.objects.get(pk=message.pk)
    assert message.subject == "Old row"
    assert message.to_addresses == ["old@example.org"]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
@pytest.mark.parametrize(
    "fmt",
    [
        lambda obj: legacy_2x(obj),
        lambda obj: legacy_2x(obj, 0),
        lambda obj: legacy_raw(obj, 0),
        lambda obj: legacy_raw(obj, 2),
    ],
    ids=["base64-default", "base64-protocol0", "raw-protocol0", "raw-protocol2"],
)
def test_legacy_pickle_cannot_run_code(tmp_path, exploit, fmt):
    marker = tmp_path / "pwned"
    data = fmt(exploit(marker))
    # The crafted payload is the real thing: a plain unpickle would create the marker.
    assert b"system" in pickle.dumps(exploit(marker)) or b"eval" in pickle.dumps(exploit(marker))

    assert db_to_email(data) is None
    assert not marker.exists()

    if "\x00" in data and connection.vendor == "postgresql":
        return  # PostgreSQL text cannot hold NUL, so such a row cannot exist there
    message = Message.objects.create(message_data=data)
    message = Message.objects.get(pk=message.pk)
    assert message.email is None
    assert str(message) == "<Message repr unavailable>"
    assert not marker.exists()


def test_legacy_pickle_exploit_inside_an_email(tmp_path):
    marker = tmp_path / "pwned"
    email = make_email()
    email.extra_headers["X-Evil"] = _Exploit(marker)
    assert db_to_email(legacy_2x(email)) is None
    assert not marker.exists()


def test_legacy_pickle_cannot_walk_from_an_allowed_class_to_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = dotted_name_exploit(marker)

    assert db_to_email(base64.encodebytes(payload).decode("ascii")) is None
    assert db_to_email(payload) is None
    assert not marker.exists()

    # Guard: the payload is real; an unrestricted unpickler runs it.
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("email.utils", "os"),  # a module, not a class
        ("email.utils", "formataddr"),  # a function
        ("email.feedparser", "StringIO"),  # a class imported into an email module, not defined there
        ("django.core.mail.message", "Path"),
        ("django.core.mail.message", "settings"),
        ("email.message", "Message.__class__"),
        ("builtins", "eval"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
    ],
)
def test_legacy_pickle_refuses_non_email_globals(module, name):
    payload = io.BytesIO()
    CraftingPickler(payload, protocol=4).dump(Global(module, name))
    assert db_to_email(base64.encodebytes(payload.getvalue()).decode("ascii")) is None
    assert db_to_email(payload.getvalue()) is None


def test_exploit_payload_is_real(tmp_path):
    """Guard for the tests above: the same payload, unpickled without restriction, does run code."""
    marker = tmp_path / "pwned"
    pickle.loads(base64.decodebytes(legacy_2x(_Exploit(marker)).encode("ascii")))
    assert marker.exists()


# Migrations


EXPECTED_2X_MIGRATIONS = [
    "0001_initial",
    "0002_auto_20150720_1433",
    "0003_messagelog_message_id",
    "0004_auto_20190920_1512",
    "0005_id_bigautofield",
    "0006_message_retry_count",
    "0007_alter_messagelog_message_data",
]


def test_no_missing_migrations():
    out = StringIO()
    call_command("makemigrations", "mailer", "--check", "--dry-run", stdout=out, stderr=out)
    assert "No changes detected" in out.getvalue()


def test_migration_names_match_django_mailer_2x():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    names = sorted(name for app, name in loader.disk_migrations if app == "mailer")
    assert names[:7] == EXPECTED_2X_MIGRATIONS
    assert all(name[:4].isdigit() and int(name[:4]) >= 8 for name in names[7:])
    # A linear history: each migration depends on the one before it.
    for previous, name in zip(names, names[1:], strict=False):
        assert ("mailer", previous) in loader.disk_migrations[("mailer", name)].dependencies


@pytest.mark.django_db(transaction=True)
def test_migrate_back_to_2x_schema_and_forward():
    """A database at 2.3.2's last migration (0007) migrates forward, and back again."""
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("mailer")
    try:
        executor.migrate([("mailer", "0007_alter_messagelog_message_data")])
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    message = queue(email=make_email("After migrations"))
    assert Message.objects.get(pk=message.pk).subject == "After migrations"


@pytest.mark.django_db(transaction=True)
def test_migration_0004_converts_string_priorities():
    """2.x before 0004 stored priority as "1".."4": the migration turns them into integers."""
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("mailer")
    data = legacy_2x(make_email("From 2019"))
    try:
        executor.migrate([("mailer", "0003_messagelog_message_id")])
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            for priority in ("1", "3", "4"):
                cursor.execute(
                    f"INSERT INTO {qn('mailer_message')} ({qn('message_data')}, {qn('when_added')}, {qn('priority')}) "
                    "VALUES (%s, %s, %s)",
                    [data, now(), priority],
                )
            cursor.execute(
                f"INSERT INTO {qn('mailer_messagelog')} ({qn('message_data')}, {qn('when_added')}, {qn('priority')}, "
                f"{qn('when_attempted')}, {qn('result')}, {qn('log_message')}, {qn('message_id')}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [data, now(), "2", now(), RESULT_SUCCESS, "", "<old@example.org>"],
            )
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)

    assert sorted(Message.objects.values_list("priority", flat=True)) == [1, 3, 4]
    assert Message.objects.high_priority().count() == 1
    assert Message.objects.deferred().count() == 1
    assert all(m.subject == "From 2019" for m in Message.objects.all())
    log = MessageLog.objects.get()
    assert log.priority == PRIORITY_MEDIUM
    assert log.message_id == "<old@example.org>"


def test_the_dont_send_lookup_has_an_index_where_the_database_can_have_one():
    """Migration 0010 indexes LOWER(to_address) on PostgreSQL, SQLite and MySQL 8; MariaDB has no such index."""
    from django.db.models.functions import Lower

    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, DontSendEntry._meta.db_table)
    if not connection.features.supports_expression_indexes:
        assert "mailer_dontsend_lower_idx" not in indexes
        return
    assert "mailer_dontsend_lower_idx" in indexes
    DontSendEntry.objects.bulk_create(DontSendEntry(to_address=f"user{n}@example.org") for n in range(200))
    keys = ["user7@example.org", "nobody@example.org"]
    query = DontSendEntry.objects.annotate(key=Lower("to_address")).filter(key__in=keys).values_list("key", flat=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a small table: show that the index can be used
    plan = query.explain()
    assert "mailer_dontsend_lower_idx" in plan, plan
    assert list(query) == ["user7@example.org"]
