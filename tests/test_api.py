"""The functions in ``mailer``: send_mail, send_html_mail, send_mass_mail, mail_admins, mail_managers, get_priority."""

import re

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import BadHeaderError  # ValueError itself from Django 6.0
from django.utils.translation import gettext_lazy

import mailer
from mailer import engine
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    DontSendEntry,
    Message,
    MessageLog,
)
from tests.support.queries import inserts_into

pytestmark = pytest.mark.django_db


def only_message():
    messages = list(Message.objects.all())
    assert len(messages) == 1, messages
    return messages[0]


# send_mail


def test_send_mail_queues_one_message():
    result = mailer.send_mail("Subject", "Body text", "from@example.org", ["to1@example.org", "to2@example.org"])

    assert result == 1
    message = only_message()
    email = message.email
    assert email.subject == "Subject"
    assert email.body == "Body text"
    assert email.from_email == "from@example.org"
    assert email.to == ["to1@example.org", "to2@example.org"]
    assert email.cc == [] and email.bcc == []
    assert message.priority == PRIORITY_MEDIUM
    assert message.retry_count == 0
    assert message.to_addresses == ["to1@example.org", "to2@example.org"]
    assert message.subject == "Subject"
    assert mail.outbox == []  # queued, not sent


def test_send_mail_does_not_send_until_send_all():
    mailer.send_mail("Subject", "Body", "from@example.org", ["to@example.org"])
    assert mail.outbox == []

    engine.send_all()

    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert (sent.subject, sent.body, sent.from_email, sent.to) == (
        "Subject",
        "Body",
        "from@example.org",
        ["to@example.org"],
    )
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 1


def test_send_mail_forces_lazy_translation_strings_to_text():
    mailer.send_mail(gettext_lazy("Lazy subject"), gettext_lazy("Lazy body"), "from@example.org", ["to@example.org"])

    email = only_message().email
    assert type(email.subject) is str
    assert type(email.body) is str
    assert email.subject == "Lazy subject"
    assert email.body == "Lazy body"


def test_send_mail_accepts_a_tuple_of_recipients():
    mailer.send_mail("S", "B", "from@example.org", ("a@example.org", "b@example.org"))
    assert only_message().email.to == ["a@example.org", "b@example.org"]


@pytest.mark.parametrize("priority", [PRIORITY_HIGH, PRIORITY_MEDIUM, PRIORITY_LOW, PRIORITY_DEFERRED])
def test_send_mail_priority_constants(priority):
    mailer.send_mail("S", "B", "from@example.org", ["to@example.org"], priority=priority)
    assert only_message().priority == priority


def test_send_mail_priorities_decide_send_order():
    mailer.send_mail("low", "B", "from@example.org", ["to@example.org"], priority=PRIORITY_LOW)
    mailer.send_mail("medium", "B", "from@example.org", ["to@example.org"])
    mailer.send_mail("high", "B", "from@example.org", ["to@example.org"], priority=PRIORITY_HIGH)
    mailer.send_mail("deferred", "B", "from@example.org", ["to@example.org"], priority=PRIORITY_DEFERRED)

    engine.send_all()

    assert [m.subject for m in mail.outbox] == ["high", "medium", "low"]
    assert [m.subject for m in Message.objects.all()] == ["deferred"]


def test_send_mail_default_from_email_when_none(settings):
    settings.DEFAULT_FROM_EMAIL = "default@example.org"
    mailer.send_mail("S", "B", None, ["to@example.org"])
    assert only_message().email.from_email == "default@example.org"


def test_send_mail_applies_dont_send_list():
    DontSendEntry.objects.create(to_address="blocked@example.org", when_added="2020-01-01T00:00:00Z")
    mailer.send_mail("S", "B", "from@example.org", ["blocked@example.org", "ok@example.org"])
    assert only_message().email.to == ["ok@example.org"]


def test_send_mail_with_bad_header_raises_and_queues_nothing():
    with pytest.raises(BadHeaderError):
        mailer.send_mail("Subject\nBcc: victim@example.org", "B", "from@example.org", ["to@example.org"])
    assert Message.objects.count() == 0


def test_send_mail_with_newline_in_recipient_raises_and_queues_nothing():
    with pytest.raises(BadHeaderError):
        mailer.send_mail("S", "B", "from@example.org", ["to@example.org\nBcc: victim@example.org"])
    with pytest.raises(BadHeaderError):
        mailer.send_mail("S", "B", "from@example.org\r\nBcc: victim@example.org", ["to@example.org"])
    assert Message.objects.count() == 0


# send_html_mail


def test_send_html_mail_queues_text_with_html_alternative():
    result = mailer.send_html_mail(
        "HTML subject", "Plain body", "<p>HTML body</p>", "from@example.org", ["to@example.org"], priority=PRIORITY_HIGH
    )

    assert result == 1
    message = only_message()
    assert message.priority == PRIORITY_HIGH
    email = message.email
    assert isinstance(email, EmailMultiAlternatives)
    assert email.subject == "HTML subject"
    assert email.body == "Plain body"
    assert email.content_subtype == "plain"
    assert [tuple(alt) for alt in email.alternatives] == [("<p>HTML body</p>", "text/html")]
    assert email.to == ["to@example.org"]
    assert email.from_email == "from@example.org"


def test_send_html_mail_headers():
    mailer.send_html_mail(
        "S",
        "Plain",
        "<b>html</b>",
        "from@example.org",
        ["to@example.org"],
        headers={"Reply-To": "reply@example.org", "X-Campaign": "spring"},
    )

    email = only_message().email
    assert email.extra_headers.pop("Message-ID")  # given when queued (tests/test_message_id.py)
    assert email.extra_headers == {"Reply-To": "reply@example.org", "X-Campaign": "spring"}

    engine.send_all()
    sent = mail.outbox[0].message()
    assert sent["Reply-To"] == "reply@example.org"
    assert sent["X-Campaign"] == "spring"
    assert sent.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in sent.get_payload()]
    assert parts == ["text/plain", "text/html"]


def test_send_html_mail_forces_lazy_strings():
    mailer.send_html_mail(
        gettext_lazy("Lazy S"), gettext_lazy("Lazy B"), gettext_lazy("<i>lazy</i>"), "f@example.org", ["t@example.org"]
    )
    email = only_message().email
    assert type(email.subject) is str and email.subject == "Lazy S"
    assert type(email.body) is str and email.body == "Lazy B"
    content, mimetype = email.alternatives[0]
    assert type(content) is str and content == "<i>lazy</i>"
    assert mimetype == "text/html"


# send_mass_mail


def test_send_mass_mail_queues_each_message():
    datatuple = [
        ("Subject 1", "Body 1", "from1@example.org", ["a@example.org"]),
        ("Subject 2", "Body 2", "from2@example.org", ["b@example.org", "c@example.org"]),
        ("Subject 3", "Body 3", None, ["d@example.org"]),
    ]

    assert mailer.send_mass_mail(datatuple) == 3

    stored = sorted((m.email.subject, m.email.body, m.email.from_email, m.email.to) for m in Message.objects.all())
    assert stored[0] == ("Subject 1", "Body 1", "from1@example.org", ["a@example.org"])
    assert stored[1] == ("Subject 2", "Body 2", "from2@example.org", ["b@example.org", "c@example.org"])
    assert stored[2][:2] == ("Subject 3", "Body 3") and stored[2][3] == ["d@example.org"]
    assert all(m.priority == PRIORITY_MEDIUM for m in Message.objects.all())


def test_send_mass_mail_empty():
    assert mailer.send_mass_mail([]) == 0
    assert Message.objects.count() == 0


def test_send_mass_mail_accepts_a_generator():
    datatuple = ((f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(4))
    assert mailer.send_mass_mail(datatuple) == 4
    assert Message.objects.count() == 4


def test_send_mass_mail_is_one_transaction(django_assert_max_num_queries):
    datatuple = [(f"S{i}", "B", "f@example.org", [f"t{i}@example.org"]) for i in range(5)]
    # One query for the don't-send list, one INSERT for the batch, plus the savepoint/transaction bookkeeping;
    # five separate saves would need at least five INSERTs.
    with django_assert_max_num_queries(4) as captured:
        mailer.send_mass_mail(datatuple)
    assert len(inserts_into("mailer_message", captured.captured_queries)) == 1
    assert Message.objects.count() == 5


def test_send_mass_mail_with_one_bad_message_stores_nothing():
    datatuple = [
        ("Good 1", "B", "f@example.org", ["a@example.org"]),
        ("Bad\r\nX-Injected: 1", "B", "f@example.org", ["b@example.org"]),
        ("Good 2", "B", "f@example.org", ["c@example.org"]),
    ]
    with pytest.raises(BadHeaderError):
        mailer.send_mass_mail(datatuple)
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


def test_send_mass_mail_counts_only_what_was_queued():
    DontSendEntry.objects.create(to_address="gone@example.org", when_added="2020-01-01T00:00:00Z")
    datatuple = [
        ("S1", "B", "f@example.org", ["gone@example.org"]),
        ("S2", "B", "f@example.org", ["here@example.org"]),
    ]
    assert mailer.send_mass_mail(datatuple) == 1
    assert only_message().email.subject == "S2"


# mail_admins / mail_managers


@pytest.mark.parametrize("function, setting", [(mailer.mail_admins, "ADMINS"), (mailer.mail_managers, "MANAGERS")])
@pytest.mark.parametrize(
    "entries",
    [
        [("Ann Admin", "a@x.org")],
        ["a@x.org"],
    ],
    ids=["name-address-pairs", "plain-addresses"],
)
def test_mail_admins_and_managers(settings, function, setting, entries):
    setattr(settings, setting, entries)
    settings.EMAIL_SUBJECT_PREFIX = "[Site] "
    settings.SERVER_EMAIL = "server@example.org"

    assert function("Something broke", "Details") == 1

    message = only_message()
    email = message.email
    assert email.to == ["a@x.org"]
    assert email.subject == "[Site] Something broke"
    assert email.body == "Details"
    assert email.from_email == "server@example.org"
    assert message.priority == PRIORITY_MEDIUM


@pytest.mark.parametrize("function, setting", [(mailer.mail_admins, "ADMINS"), (mailer.mail_managers, "MANAGERS")])
def test_mail_admins_and_managers_several_recipients_and_priority(settings, function, setting):
    setattr(settings, setting, [("A", "a@x.org"), "b@x.org"])
    function("S", "B", priority=PRIORITY_HIGH)
    message = only_message()
    assert message.email.to == ["a@x.org", "b@x.org"]
    assert message.priority == PRIORITY_HIGH


@pytest.mark.parametrize("function, setting", [(mailer.mail_admins, "ADMINS"), (mailer.mail_managers, "MANAGERS")])
def test_mail_admins_and_managers_default_prefix(settings, function, setting):
    setattr(settings, setting, ["a@x.org"])
    function(gettext_lazy("Lazy"), gettext_lazy("Body"))
    email = only_message().email
    assert email.subject == "[Django] Lazy"
    assert type(email.body) is str and email.body == "Body"


@pytest.mark.parametrize("function, setting", [(mailer.mail_admins, "ADMINS"), (mailer.mail_managers, "MANAGERS")])
def test_mail_admins_and_managers_without_recipients_queue_nothing(settings, function, setting):
    setattr(settings, setting, [])
    function("S", "B")
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


# get_priority


def test_get_priority_none_is_medium():
    assert mailer.get_priority(None) == PRIORITY_MEDIUM == 2


@pytest.mark.parametrize("priority", [PRIORITY_HIGH, PRIORITY_MEDIUM, PRIORITY_LOW, PRIORITY_DEFERRED])
def test_get_priority_constants(priority):
    assert mailer.get_priority(priority) == priority


@pytest.mark.parametrize("label, value", [("high", 1), ("medium", 2), ("low", 3)])
def test_get_priority_labels_are_deprecated(label, value):
    with pytest.warns(DeprecationWarning, match=re.escape(repr(label))):
        assert mailer.get_priority(label) == value


def test_get_priority_deprecation_points_at_the_caller():
    with pytest.warns(DeprecationWarning) as record:
        mailer.get_priority("high")
    assert record[0].filename == __file__


@pytest.mark.parametrize("label, value", [("high", PRIORITY_HIGH), ("low", PRIORITY_LOW)])
def test_send_mail_with_priority_label(label, value):
    with pytest.warns(DeprecationWarning) as record:
        mailer.send_mail("S", "B", "f@example.org", ["t@example.org"], priority=label)
    assert only_message().priority == value
    # The warning names the line that passed the label, not django-mailer's own code: otherwise Python's
    # default filters would hide it from the very people who need to see it.
    assert [w.filename for w in record] == [__file__]


def test_send_html_mail_and_mail_admins_priority_label_warning_points_at_caller(settings):
    settings.ADMINS = ["a@x.org"]
    with pytest.warns(DeprecationWarning) as record:
        mailer.send_html_mail("S", "B", "<p>B</p>", "f@example.org", ["t@example.org"], priority="low")
        mailer.mail_admins("S", "B", priority="high")
    assert [w.filename for w in record] == [__file__, __file__]
    assert sorted(Message.objects.values_list("priority", flat=True)) == [PRIORITY_HIGH, PRIORITY_LOW]


@pytest.mark.parametrize("priority", [0, 5, -1, "urgent", "1", "HIGH", True, False, 1.5, object(), []])
def test_get_priority_rejects_anything_else(priority):
    with pytest.raises(ValueError):
        mailer.get_priority(priority)


@pytest.mark.parametrize("priority", [5, "urgent", True])
def test_invalid_priority_queues_nothing(settings, priority):
    settings.ADMINS = ["a@x.org"]
    with pytest.raises(ValueError):
        mailer.send_mail("S", "B", "f@example.org", ["t@example.org"], priority=priority)
    with pytest.raises(ValueError):
        mailer.send_html_mail("S", "B", "<p>B</p>", "f@example.org", ["t@example.org"], priority=priority)
    with pytest.raises(ValueError):
        mailer.mail_admins("S", "B", priority=priority)
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


# __version__


def test_version():
    assert isinstance(mailer.__version__, str)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?([.-]?(a|b|rc|dev|post)\d*)*", mailer.__version__), mailer.__version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("django-mailer")
    except PackageNotFoundError:
        return
    assert installed == mailer.__version__


def test_public_names():
    for name in mailer.__all__:
        assert hasattr(mailer, name), name
    assert {"send_mail", "send_html_mail", "send_mass_mail", "mail_admins", "mail_managers", "get_priority"} <= set(
        mailer.__all__
    )
