"""Text taken from an email reaches log lines with control characters escaped visibly (issue 12, item 11).

An ANSI escape sequence in a subject recolours or clears the terminal that tails the log; a carriage
return or U+2028 makes one record look like two (a log viewer splits lines there) and can forge the
second; a right-to-left override reorders what is shown. Each must be shown as ``\\x1b``, ``\\u2028``...
"""

import base64
import contextlib
import logging
import pickle

import pytest
from django.core.mail import EmailMessage

import mailer
from mailer.engine import send_all
from mailer.logtext import loggable
from mailer.models import DontSendEntry, Message
from tests.support.logs import mailer_lines

pytestmark = pytest.mark.django_db

# ESC (ANSI colour, clear screen), BEL, NEL, LINE/PARAGRAPH SEPARATOR, RIGHT-TO-LEFT OVERRIDE, DEL.
# Queueing refuses these C0 controls in a subject (not NEL, U+2028, U+2029, U+202E); rows written before can hold any.
SUBJECT = "\x1b[31mURGENT\x1b[0m\x1b[2J\x07 pay now\x85\u2028INFO fake line\u2029\u202etxt.exe\x7f"
ESCAPED_SUBJECT = "\\x1b[31mURGENT\\x1b[0m\\x1b[2J\\x07 pay now\\x85\\u2028INFO fake line\\u2029\\u202etxt.exe\\x7f"
RAW = ["\x1b", "\x07", "\r", "\n", "\x85", "\u2028", "\u2029", "\u202e", "\x7f"]
# Queueing refuses ASCII controls in addresses, not these.
NAME = "Ann\u2028\x85\u202e"
ESCAPED_NAME = "Ann\\u2028\\x85\\u202e"


def assert_clean(lines):
    for line in lines:
        for raw in RAW:
            assert raw not in line, (raw, line)


def test_loggable_escapes_controls_and_keeps_the_rest():
    assert loggable(SUBJECT) == ESCAPED_SUBJECT
    assert loggable("Grüße, 日本 👩‍👩‍👧 \\ tab\tend") == "Grüße, 日本 👩‍👩‍👧 \\ tab\\tend"  # ZWJ emoji untouched
    assert loggable("plain") == "plain"


def test_the_sending_line_escapes_the_subject_and_addresses(caplog):
    # Queueing now refuses the C0 controls in a subject; a row queued before that (signed, as this package
    # writes them) can still hold them.
    message = Message()
    message.email = EmailMessage(
        SUBJECT, "body", "from@example.org", [f'"{NAME}" <ann@example.org>', "bob@example.org"]
    )
    message.save()
    with caplog.at_level(logging.INFO, logger="mailer"), contextlib.suppress(ValueError):
        send_all()  # Django 6's email policy refuses NEL and U+2028 in a header; the sending line comes first
    lines = mailer_lines(caplog)
    [sending] = [line for line in lines if line.startswith("sending message")]
    assert ESCAPED_SUBJECT in sending
    assert ESCAPED_NAME in sending
    assert_clean(lines)


def test_a_2x_row_with_an_escape_in_an_address(caplog):
    email = EmailMessage(SUBJECT + "\rINFO forged", "body", "from@example.org", ['"\x1b[2JAnn" <ann@example.org>'])
    Message.objects.create(message_data=base64.encodebytes(pickle.dumps(email)).decode("ascii"))
    with caplog.at_level(logging.INFO, logger="mailer"), contextlib.suppress(ValueError):
        send_all()  # the CR makes sending fail (BadHeaderError); the line saying it is sent comes first
    lines = mailer_lines(caplog)
    [sending] = [line for line in lines if line.startswith("sending message")]
    assert f"{ESCAPED_SUBJECT}\\rINFO forged" in sending and "\\x1b[2JAnn" in sending
    assert_clean(lines)


def test_the_skipping_line_escapes_the_address(caplog):
    DontSendEntry.objects.create(to_address="ann@example.org")
    with caplog.at_level(logging.INFO, logger="mailer"):
        mailer.send_mail("hello", "body", "from@example.org", [f'"{NAME}" <ann@example.org>', "bob@example.org"])
        DontSendEntry.objects.create(to_address="bob@example.org")  # blocked at sending time
        send_all()
    lines = mailer_lines(caplog)
    skipping = [line for line in lines if line.startswith("skipping")]
    assert len(skipping) == 2  # ann when queueing, bob when sending
    assert ESCAPED_NAME in skipping[0] and "bob@example.org" in skipping[1]
    assert_clean(lines)
