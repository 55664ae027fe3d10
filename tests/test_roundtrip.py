"""Property: any email survives queue and send unchanged, as seen by an SMTP server on loopback.

Hypothesis builds ``EmailMessage`` and ``EmailMultiAlternatives`` objects with unicode subjects, bodies
and display names, cc/bcc/reply-to, extra headers, HTML alternatives and binary attachments. Each is
queued through Django's mail API (``DbBackend``), sent by ``send_all()`` through Django's SMTP backend to
aiosmtpd, parsed there with Python's email package, and compared field by field with what was queued.
"""

import copy
from email.headerregistry import Address
from email.utils import getaddresses

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mailer.engine import send_all
from mailer.routing import routes

pytestmark = pytest.mark.django_db

# Text without control characters (a newline in a header is refused at queue time, see test_bad_input).
line = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
# Header values as the parser gives them back: no leading, trailing or repeated whitespace.
header_text = line.map(lambda text: " ".join(text.split()))
body = st.lists(line, max_size=8).map("\n".join)
name = header_text
local_part = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=12).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
)
domain = st.sampled_from(["example.org", "example.com", "exämple.org", "例え.jp"])
addr_spec = st.builds("{}@{}".format, local_part, domain)
address = st.builds(lambda n, a: str(Address(display_name=n, addr_spec=a)), name, addr_spec)
addresses = st.lists(address, max_size=3)
header_value = header_text.filter(bool)
extra_headers = st.dictionaries(
    st.sampled_from(["X-Tag", "X-Campaign", "X-Ünïcode-Free-Name"]), header_value, max_size=2
)
attachment = st.tuples(
    st.builds("{}.bin".format, st.text("abcdefghij", min_size=1, max_size=8)),
    st.binary(max_size=3000),
)


@st.composite
def emails(draw):
    kwargs = {
        "subject": draw(header_text),
        "body": draw(body),
        "from_email": draw(address),
        "to": draw(addresses.filter(bool)),
        "cc": draw(addresses),
        "bcc": draw(addresses),
        "reply_to": draw(addresses),
        "headers": draw(extra_headers.filter(lambda headers: "X-Ünïcode-Free-Name" not in headers)),
    }
    html = draw(st.none() | body.map(lambda text: f"<p>{text}</p>"))
    email = EmailMultiAlternatives(**kwargs) if html is not None else EmailMessage(**kwargs)
    if html is not None:
        email.attach_alternative(html, "text/html")
    for filename, content in draw(st.lists(attachment, max_size=2)):
        email.attach(filename, content, "application/octet-stream")
    return email


def words(text):
    """Header text without its whitespace. Before 6.0, Django encodes long unicode header values in chunks
    that Python decodes with spaces added inside names and words; sending without the queue does the
    same (the first assertion of the test checks that), so whitespace is left out of these comparisons."""
    return "".join(str(text).split())


def parsed(header):
    """The addresses of a received header, as Python's email package parses them (not from its text)."""
    if header is None:
        return []
    return [(words(address.display_name), address.addr_spec) for address in header.addresses]


def expected_addresses(values):
    # Non-ASCII domains travel IDNA-encoded.
    return [(words(name), _ascii_domain(addr)) for name, addr in getaddresses(values)]


def same_text(received, sent):
    # Sent text parts end with a newline from Django 6 on, and travel with CRLF line ends.
    return received.replace("\r\n", "\n").rstrip("\n") == sent.rstrip("\n")


def structure(message):
    """Everything a reader sees, except what differs between two sends (Message-ID, Date, MIME boundaries)."""
    headers = [(name, str(value)) for name, value in message.items() if name not in ("Message-ID", "Date")]
    parts = [
        (part.get_content_type(), part.get_filename(), part.get_content())
        for part in message.walk()
        if not part.is_multipart()
    ]
    return [(name, value) for name, value in headers if name != "Content-Type"], parts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=emails())
def test_any_email_survives_queue_and_send(smtp_settings, email):
    """What arrives after the queue is what Django sends without it, and has what was queued."""
    note(repr(vars(email)))
    server = smtp_settings
    server.messages.clear()
    with routes()[None].open() as connection:  # Django's SMTP backend, as settings configure it
        connection.send_messages([copy.deepcopy(email)])
    [direct] = server.wait_for(1)
    email.send()
    assert send_all().sent == 1
    received = server.wait_for(2)[1]
    message = received.message

    # The queue changes nothing that Django's own sending would not.
    assert structure(message) == structure(direct.message)
    assert received.rcpt_tos == direct.rcpt_tos

    # And what arrives is what was queued.
    for header, values in [
        ("From", [email.from_email]),
        ("To", email.to),
        ("Cc", email.cc),
        ("Reply-To", email.reply_to),
    ]:
        expected = expected_addresses(values)
        if parsed(direct.message[header]) != expected:
            # Not ours to fix: Python 3.12.1's email package, for one, can fold a list of long unicode names
            # so that the comma between two addresses ends up inside an encoded word.
            note(f"{header} is changed by Django and Python even without the queue")
            continue
        assert parsed(message[header]) == expected
    assert message["Bcc"] is None
    assert received.rcpt_tos == [addr for _name, addr in expected_addresses(email.to + email.cc + email.bcc)]
    assert words(message["Subject"] or "") == words(email.subject)
    for header, value in email.extra_headers.items():
        assert words(message[header]) == words(value)
    texts = [part for part in message.walk() if part.get_content_maintype() == "text" and not part.is_attachment()]
    plain = [part.get_content() for part in texts if part.get_content_type() == "text/plain"]
    wanted_html = [content for content, _mimetype in getattr(email, "alternatives", [])]
    # Django 6 leaves out an empty plain text body when there is an alternative.
    assert all(same_text(text, email.body) for text in plain)
    assert len(plain) == 1 or (not email.body and not plain)  # Django leaves out an empty body part
    html = [part.get_content() for part in texts if part.get_content_type() == "text/html"]
    assert len(html) == len(wanted_html) and all(map(same_text, html, wanted_html))
    attachments = [(part.get_filename(), part.get_content()) for part in message.iter_attachments()]
    assert attachments == [(filename, content) for filename, content, _mimetype in email.attachments]


def _ascii_domain(addr):
    """The envelope carries non-ASCII domains IDNA-encoded."""
    local, _, host = addr.rpartition("@")
    return f"{local}@{host.encode('idna').decode('ascii')}"
