"""How an email is stored: signed data, the legacy pickle formats, and the restricted unpickler that reads them."""

import base64
import datetime
import io
import pickle

import pytest
from django.core import signing
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.db import connection

from mailer import serialization
from mailer.models import (
    Message,
    db_to_email,
    email_to_db,
)
from tests.support.emails import make_email
from tests.support.pickles import (
    CraftingPickler,
    EvalCall,
    Global,
    SystemCall,
    dotted_name_exploit,
    legacy_2x,
    legacy_raw,
)
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db


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


@pytest.mark.parametrize("exploit", [SystemCall, EvalCall])
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
    email.extra_headers["X-Evil"] = SystemCall(marker)
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
    pickle.loads(base64.decodebytes(legacy_2x(SystemCall(marker)).encode("ascii")))
    assert marker.exists()
