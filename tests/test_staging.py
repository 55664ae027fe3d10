"""MAILER_REDIRECT_TO, the staging switch: every message goes to a fixed list of addresses instead of its recipients.

The relay is a real SMTP server on loopback (tests/support/relays.py): what it records is what a mail server
was given, envelope and headers.
"""

import json
import logging
import re
import signal
import threading
from email import policy
from email.parser import BytesParser
from io import StringIO

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.management import call_command

from mailer.engine import send_all
from mailer.models import RESULT_DONT_SEND, RESULT_FAILURE, RESULT_SUCCESS, DontSendEntry, Message, MessageLog
from mailer.staging import check_redirect
from tests.support.procs import running_command
from tests.support.relays import NO_SUCH_USER, ScriptedRelay, send_through
from tests.support.sqlite_project import child_env, query, queue_in
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db

SENDER = "from@example.com"
STAGING = ["qa@staging.example", "Dev Team <dev@staging.example>"]
TO = ["ann@example.com", "Zoë Ünal <zoe@example.com>"]
CC = ["carl@example.com"]
BCC = ["hidden@example.com"]
NOTICE = (
    "MAILER_REDIRECT_TO is set: every message goes to qa@staging.example, Dev Team <dev@staging.example> "
    "instead of its recipients."
)
NOTE = "redirected to qa@staging.example, Dev Team <dev@staging.example> (MAILER_REDIRECT_TO)"


def queue(subject="hello", to=TO, cc=CC, bcc=BCC, headers=None):
    """One message on the queue (through the DbBackend), as a project queues it."""
    EmailMessage(subject, "body", SENDER, to, bcc=bcc, cc=cc, headers=headers).send()


def headers_of(transaction):
    return BytesParser(policy=policy.default).parsebytes(transaction.data)


@pytest.fixture
def staging(settings, relay):
    settings.MAILER_REDIRECT_TO = STAGING
    return relay


@pytest.mark.parametrize("connections", [1, 3])
def test_the_relay_gets_the_message_for_the_redirect_addresses_only(settings, staging, connections):
    settings.MAILER_SENDER_CONNECTIONS = connections
    queue()
    result = send_all()

    assert result.sent == 1
    [transaction] = staging.transactions
    assert transaction.rcpt_tos == ["qa@staging.example", "dev@staging.example"]
    sent = headers_of(transaction)
    assert sent["To"] == "qa@staging.example, Dev Team <dev@staging.example>"
    assert sent["Cc"] is None and sent["Bcc"] is None
    assert sent["X-Mailer-Original-To"] == "ann@example.com, Zoë Ünal <zoe@example.com>"
    assert sent["X-Mailer-Original-Cc"] == "carl@example.com"
    assert sent["X-Mailer-Original-Bcc"] == "hidden@example.com"
    assert sent["Subject"] == "hello"
    assert sent.get_content().strip() == "body"
    assert not Message.objects.exists()


def test_the_log_keeps_the_original_recipients_and_says_where_the_message_went(staging):
    queue()
    send_all()

    log = MessageLog.objects.get()
    assert log.result == RESULT_SUCCESS
    assert log.log_message == NOTE
    assert (log.email.to, log.email.cc, log.email.bcc) == (TO, CC, BCC)
    assert not any(name.startswith("X-Mailer-Original") for name in log.email.extra_headers)
    # The Message-ID the relay got is the one logged.
    assert headers_of(staging.transactions[0])["Message-ID"] == log.message_id
    # Searched by an original address (To, Cc or Bcc), it is found; by a redirect address, not.
    for address in ("ann@example.com", "zoe@example.com", "Carl@Example.com", "hidden@example.com"):
        assert list(MessageLog.objects.search(address)) == [log]
    assert not MessageLog.objects.search("qa@staging.example").exists()


def test_only_the_lists_a_message_has_get_a_header(staging):
    queue(cc=[], bcc=[])
    send_all()

    sent = headers_of(staging.transactions[0])
    assert sent["X-Mailer-Original-To"] == "ann@example.com, Zoë Ünal <zoe@example.com>"
    assert "X-Mailer-Original-Cc" not in sent and "X-Mailer-Original-Bcc" not in sent


def test_an_address_that_is_not_ascii_is_kept_too(staging):
    queue(to=["Jürgen <jürgen@exämple.com>"], cc=[], bcc=[])
    send_all()

    [transaction] = staging.transactions
    assert transaction.rcpt_tos == ["qa@staging.example", "dev@staging.example"]
    # Django before 6 encodes the whole value, which the parser gives back with a leading space.
    assert headers_of(transaction)["X-Mailer-Original-To"].strip() == "Jürgen <jürgen@exämple.com>"


def test_a_to_header_of_the_message_does_not_reach_the_relay_and_is_logged(staging):
    queue(to=["list@example.com"], cc=[], bcc=[], headers={"To": "Customers <list@example.com>", "X-Tag": "t"})
    send_all()

    sent = headers_of(staging.transactions[0])
    assert sent["To"] == "qa@staging.example, Dev Team <dev@staging.example>"
    assert sent["X-Mailer-Original-To"] == "list@example.com"
    assert sent["X-Tag"] == "t"
    logged = MessageLog.objects.get().email
    assert logged.extra_headers["To"] == "Customers <list@example.com>"
    assert logged.extra_headers["X-Tag"] == "t"


def test_off_by_default(relay):
    queue()
    send_all()

    [transaction] = relay.transactions
    assert sorted(transaction.rcpt_tos) == [
        "ann@example.com",
        "carl@example.com",
        "hidden@example.com",
        "zoe@example.com",
    ]
    sent = headers_of(transaction)
    assert not [name for name in sent.keys() if name.startswith("X-Mailer-Original")]
    assert MessageLog.objects.get().log_message == ""


def test_the_dont_send_list_applies_to_the_original_recipients(staging):
    queue(subject="partly blocked")
    queue(subject="all blocked", to=["ann@example.com"], cc=[], bcc=[])
    # Added after the mail was queued (as the list of a production database copied to staging may be).
    DontSendEntry.objects.create(to_address="ann@example.com")
    DontSendEntry.objects.create(to_address="qa@staging.example")  # a redirect address: not looked up
    result = send_all()

    assert (result.sent, result.skipped) == (1, 1)
    [transaction] = staging.transactions
    assert transaction.rcpt_tos == ["qa@staging.example", "dev@staging.example"]
    assert headers_of(transaction)["X-Mailer-Original-To"] == "Zoë Ünal <zoe@example.com>"
    skipped = MessageLog.objects.get(result=RESULT_DONT_SEND)
    assert skipped.email.subject == "all blocked"
    assert "MAILER_REDIRECT_TO" not in skipped.log_message


def test_a_redirect_address_the_relay_refuses_is_said_in_the_log_and_blocks_nobody(settings):
    settings.MAILER_DONT_SEND_UNKNOWN_RECIPIENTS = True
    settings.MAILER_REDIRECT_TO = STAGING
    with ScriptedRelay(refuse={"dev@staging.example": NO_SUCH_USER}) as relay:
        send_through(settings, relay)
        queue()
        result = send_all()

    assert result.sent == 1
    assert relay.received() == ["qa@staging.example"]
    log = MessageLog.objects.get()  # one row: nothing is retried for the redirect address refused
    assert log.result == RESULT_SUCCESS
    # The refused address as the backend gave it to the relay (Django before 6.1 keeps its display name).
    assert re.fullmatch(
        f"{re.escape(NOTE)}\nrefused (Dev Team <)?dev@staging.example>?: {NO_SUCH_USER}", log.log_message
    )
    assert log.email.to == TO
    assert not Message.objects.exists()
    assert not DontSendEntry.objects.exists()


def test_every_redirect_address_refused_fails_the_message_and_blocks_nobody(settings):
    settings.MAILER_DONT_SEND_UNKNOWN_RECIPIENTS = True
    settings.MAILER_REDIRECT_TO = ["qa@staging.example"]
    with ScriptedRelay(refuse={"qa@staging.example": NO_SUCH_USER}) as relay:
        send_through(settings, relay)
        queue(to=["bob@example.com"], cc=[], bcc=[])
        result = send_all()

    assert result.failed == 1
    assert relay.transactions == []
    log = MessageLog.objects.get()
    assert log.result == RESULT_FAILURE
    assert log.log_message.splitlines()[-1] == "redirected to qa@staging.example (MAILER_REDIRECT_TO)"
    assert log.email.to == ["bob@example.com"]
    assert not DontSendEntry.objects.exists()  # bob's address says nothing of qa's mailbox


def test_a_message_tried_again_is_still_queued_for_its_own_recipients(settings):
    settings.MAILER_REDIRECT_TO = ["qa@staging.example"]
    with ScriptedRelay(refuse={"qa@staging.example": "451 4.3.0 Try again later"}) as relay:
        send_through(settings, relay)
        queue()
        result = send_all()

    assert result.deferred == 1
    queued = Message.objects.get()
    assert (queued.email.to, queued.email.cc, queued.email.bcc) == (TO, CC, BCC)
    assert not any(name.startswith("X-Mailer-Original") for name in queued.email.extra_headers)


@pytest.mark.parametrize(
    "value",
    [
        "qa@staging.example",  # a string, not a list
        [],
        ["qa@staging.example", 3],
        ["not an address"],
        ["qa"],  # no domain
        ["qa@staging.example\nBcc: x@example.com"],
        {"qa@staging.example"},
    ],
)
def test_a_bad_value_is_an_error_of_the_check_and_sends_nothing(settings, relay, value):
    settings.MAILER_REDIRECT_TO = value
    [error] = check_redirect()
    assert error.id == "mailer.E017"
    assert error.msg.startswith("MAILER_REDIRECT_TO ")
    assert "mailer.E017" in {message.id for message in checks.run_checks()}

    queue()
    with pytest.raises(ImproperlyConfigured, match="MAILER_REDIRECT_TO"):
        send_all()
    assert relay.transactions == []
    assert Message.objects.count() == 1 and not MessageLog.objects.exists()


@pytest.mark.parametrize("value", [None, ["qa@staging.example"], ("Dev Team <dev@staging.example>", "a@b.example")])
def test_good_values_pass_the_check(settings, value):
    settings.MAILER_REDIRECT_TO = value
    assert check_redirect() == []


def test_send_mail_says_that_mail_is_redirected(staging, caplog):
    queue()
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("send_mail")
    notices = [record for record in caplog.records if "MAILER_REDIRECT_TO is set" in record.getMessage()]
    assert [(record.levelno, record.getMessage()) for record in notices] == [(logging.INFO, NOTICE)]
    assert staging.received() == ["qa@staging.example", "dev@staging.example"]


def test_mailer_status_says_that_mail_is_redirected(settings):
    out = StringIO()
    call_command("mailer_status", stdout=out)
    assert "Staging" not in out.getvalue()
    settings.MAILER_REDIRECT_TO = STAGING

    out = StringIO()
    call_command("mailer_status", stdout=out)
    assert out.getvalue().endswith(f"\nStaging\n  {NOTICE}\n")


def test_runmailer_in_its_own_process_redirects_and_says_so(sqlite_project, smtp_server):
    env = {
        **child_env(sqlite_project),
        "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.2",
        "MAILER_TEST_SETTINGS": json.dumps({"MAILER_REDIRECT_TO": STAGING}),
    }
    with running_command("runmailer", env=env) as proc:
        watchdog = threading.Timer(60, proc.kill)  # no third line: end of the stream, not a hung test
        watchdog.start()
        proc.stdout.readline()  # the date, the banner, then the notice
        assert "Starting django-mailer send loop" in proc.stdout.readline()
        notice = proc.stdout.readline().rstrip("\n")
        watchdog.cancel()
        assert notice == NOTICE
        queue_in(sqlite_project, "from production")
        [received] = smtp_server.wait_for(1, timeout=30)
        wait_until(lambda: query(sqlite_project, "SELECT count(*) FROM mailer_messagelog") == [(1,)])
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert received.rcpt_tos == ["qa@staging.example", "dev@staging.example"]
    assert received.message["X-Mailer-Original-To"] == "to@example.com"
    assert query(sqlite_project, "SELECT recipients, log_message FROM mailer_messagelog") == [("to@example.com", NOTE)]


def test_the_admin_action_redirects_too(staging, admin_client):
    queue()
    response = admin_client.post(
        "/admin/mailer/message/", {"action": "send_messages", "_selected_action": [Message.objects.get().pk]}
    )
    assert response.status_code == 302
    assert staging.received() == ["qa@staging.example", "dev@staging.example"]
