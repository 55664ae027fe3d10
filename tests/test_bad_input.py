"""Bad input at queue time: the caller gets an exception naming the problem, and nothing is stored.

Each case here is a row of the table in docs/errors.rst ("Errors when queueing"). Every case runs through
both ways of queueing: Django's mail API with ``DbBackend``, and ``mailer.send_mail`` and friends.
"""

import pytest
from django.core import mail
from django.core.mail import EmailMessage

import mailer
from mailer.backend import DbBackend
from mailer.models import Message
from tests.support.queueing import assert_nothing_stored

pytestmark = pytest.mark.django_db

GOOD = "ann@example.org"

# (id, keyword arguments for an EmailMessage, exception, words of its message)
CASES = [
    ("newline-in-subject", {"subject": "Hi\nBcc: x@example.org"}, ValueError, "newlines"),
    ("newline-in-header", {"headers": {"X-Tag": "a\r\nb"}}, ValueError, "newlines"),
    ("colon-in-header-name", {"headers": {"X-Bad:Name": "v"}}, ValueError, "Invalid header name"),
    ("space-in-header-name", {"headers": {"X Bad": "v"}}, ValueError, "Invalid header name"),
    ("newline-in-to", {"to": ["ann@example.org\nBcc: x@example.org"]}, ValueError, "newlines"),
    ("newline-in-from", {"from_email": "f@example.org\r\nBcc: x@example.org"}, ValueError, "newlines"),
    ("two-at-signs", {"to": ["a@b@example.org"]}, ValueError, "Invalid address 'a@b@example.org' in to"),
    ("space-in-domain", {"cc": ["Ann <ann@exa mple.org>"]}, ValueError, "in cc"),
    ("two-addresses-in-one", {"bcc": ["a@example.org, b@example.org"]}, ValueError, "not exactly one address"),
    ("empty-domain", {"reply_to": ["ann@"]}, ValueError, "Invalid address 'ann@' in reply_to"),
    ("nul-in-address", {"to": ["ann@example.org\x00"]}, ValueError, "non-printables"),
    ("bad-from", {"from_email": "@example.org"}, ValueError, "in from_email"),
    ("recipient-not-a-string", {"to": [GOOD, 42]}, TypeError, "to addresses must be strings"),
    ("recipient-none", {"cc": [None]}, TypeError, "cc addresses must be strings"),
]


def email(**kwargs):
    fields = {"subject": "S", "body": "B", "from_email": "f@example.org", "to": [GOOD]} | kwargs
    return EmailMessage(**fields)


@pytest.mark.parametrize("kwargs, exception, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_through_djangos_mail_api(kwargs, exception, words):
    with pytest.raises(exception, match=words):
        email(**kwargs).send()
    assert_nothing_stored()


@pytest.mark.parametrize("kwargs, exception, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_backend_batch_is_stored_whole_or_not_at_all(kwargs, exception, words):
    batch = [email(subject="fine 1"), email(**kwargs), email(subject="fine 2")]
    with pytest.raises(exception, match=words):
        DbBackend().send_messages(batch)
    assert_nothing_stored()


MAILER_CASES = [
    ("newline-in-subject", lambda: mailer.send_mail("a\nb", "B", "f@example.org", [GOOD]), ValueError, "newlines"),
    ("bad-address", lambda: mailer.send_mail("S", "B", "f@example.org", ["a@b@c"]), ValueError, "Invalid address"),
    ("bad-from", lambda: mailer.send_html_mail("S", "B", "<p>B</p>", "x@", [GOOD]), ValueError, "from_email"),
    (
        "recipient-list-is-a-string",
        lambda: mailer.send_mail("S", "B", "f@example.org", GOOD),
        TypeError,
        "recipient_list must be a list",
    ),
    (
        "mass-mail-with-one-bad-message",
        lambda: mailer.send_mass_mail([("ok", "B", "f@example.org", [GOOD]), ("bad", "B", "f@example.org", [7])]),
        TypeError,
        "to addresses must be strings",
    ),
    ("unknown-priority", lambda: mailer.send_mail("S", "B", "f@example.org", [GOOD], priority=7), ValueError, "7"),
    (
        "priority-label-typo",
        lambda: mailer.send_mail("S", "B", "f@example.org", [GOOD], priority="urgent"),
        ValueError,
        "urgent",
    ),
    ("priority-bool", lambda: mailer.send_mail("S", "B", "f@example.org", [GOOD], priority=True), ValueError, "True"),
    (
        "bad-header-name",
        lambda: mailer.send_html_mail("S", "B", "<p>B</p>", "f@example.org", [GOOD], headers={"A:B": "c"}),
        ValueError,
        "Invalid header name",
    ),
]


@pytest.mark.parametrize("call, exception, words", [c[1:] for c in MAILER_CASES], ids=[c[0] for c in MAILER_CASES])
def test_through_mailers_own_functions(call, exception, words):
    with pytest.raises(exception, match=words):
        call()
    assert_nothing_stored()


def test_what_is_still_accepted():
    """Forms Django accepts too: a local mailbox, unicode, quoted names, obsolete but common display names."""
    addresses = [
        "webmaster",
        "Zoë <zoe@exämple.org>",
        '"Doe, John" <john@example.org>',
        "John Q. Public <john@example.org>",
        "ann+tag@sub.example.org",
    ]
    assert mail.send_mail("S", "B", "f@example.org", addresses) == 1
    assert Message.objects.get().email.to == addresses
