"""Queueing on a site without a don't-send list costs no query for it; sending always asks the database.

Sending asks in the query that claims the messages whether the list has any entry, and looks the
recipients up only if it has.

``DontSendEntry.objects`` (:mod:`mailer.managers`) remembers for ``EMPTY_FOR`` seconds that it found
the list empty. Changes made through the ORM in this process are seen at once; changes it cannot see
(raw SQL, another process) are seen when the message is sent, which is what decides.
"""

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext

import mailer
from mailer import managers
from mailer.engine import send_all
from mailer.models import RESULT_DONT_SEND, DontSendEntry, Message, MessageLog

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_memory():
    managers._seen_empty_at = None
    yield
    managers._seen_empty_at = None


def send_mail_to(to):
    """Queue through the public ``mailer.send_mail()``: the path whose queries these tests count."""
    mailer.send_mail("S", "B", "f@example.org", [to])


def test_queueing_with_an_empty_list_asks_once(django_assert_num_queries):
    with django_assert_num_queries(2):  # is the list empty? + INSERT
        send_mail_to("a@example.org")
    with django_assert_num_queries(1):  # INSERT only
        send_mail_to("b@example.org")


@pytest.mark.parametrize("add", ["create", "bulk_create"])
def test_an_entry_added_in_this_process_is_seen_at_once(add):
    send_mail_to("a@example.org")  # the list is now known to be empty
    if add == "create":
        DontSendEntry.objects.create(to_address="blocked@example.org")
    else:
        DontSendEntry.objects.bulk_create([DontSendEntry(to_address="blocked@example.org")])
    send_mail_to("blocked@example.org")
    assert Message.objects.count() == 1
    assert MessageLog.objects.get().result == RESULT_DONT_SEND


def test_an_entry_the_process_cannot_see_is_honoured_when_sending():
    send_mail_to("a@example.org")
    with connection.cursor() as cursor:  # as another process would add it
        cursor.execute(
            "INSERT INTO mailer_dontsendentry (to_address, when_added) VALUES (%s, %s)",
            ["blocked@example.org", "2026-01-01 00:00:00"],
        )
    send_mail_to("blocked@example.org")
    assert Message.objects.count() == 2  # queued: the process still trusted the empty list

    result = send_all()

    assert (result.sent, result.skipped) == (1, 1)
    assert [email.to for email in mail.outbox] == [["a@example.org"]]
    assert MessageLog.objects.filter(result=RESULT_DONT_SEND).count() == 1


def recipient_lookups(queries):
    return [q["sql"] for q in queries if "dontsendentry" in q["sql"] and "LOWER" in q["sql"].upper()]


@pytest.mark.parametrize("entries", [0, 1])
def test_sending_looks_recipients_up_only_when_the_list_has_entries(entries, settings):
    # One claim for the four: with the default 0.02 s interval a busy machine commits early and claims the
    # rest again, which looks the list up again.
    settings.MAILER_COMMIT_INTERVAL = 3600
    for n in range(3):
        send_mail_to(f"a{n}@example.org")
    send_mail_to("blocked0@example.org")
    for n in range(entries):  # added after queueing: only sending can see them
        DontSendEntry.objects.create(to_address=f"blocked{n}@example.org")

    with CaptureQueriesContext(connection) as captured:
        result = send_all()

    assert (result.sent, result.skipped) == (4 - entries, entries)
    assert len(recipient_lookups(captured.captured_queries)) == entries
