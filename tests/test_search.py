"""Finding mail by recipient and subject (issue 17): the search columns written at queue and log time, the
querysets' ``search()``, the admin's search boxes, and the filling of rows written without the columns."""

import smtplib
from datetime import timedelta

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils.timezone import now

from mailer.engine import send_all
from mailer.models import (
    PRIORITY_MEDIUM,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    DontSendEntry,
    LogRecipient,
    Message,
    MessageLog,
)
from tests.support.emails import make_email
from tests.support.pickles import insert_2x_rows, legacy_2x
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

SUBJECTS = ("Password reset for Bob", "Weekly digest", "Invoice 42")


def send_three() -> None:
    """Three emails through Django's mail API (the queue's own path): addresses in To, Cc and Bcc, in mixed case."""
    EmailMessage(SUBJECTS[0], "b", "f@example.com", ["Bob <Bob@Example.com>"], cc=["carol@example.org"]).send()
    EmailMessage(SUBJECTS[1], "b", "f@example.com", ["dave@example.com"], bcc=["BOB.smith@example.com"]).send()
    EmailMessage(SUBJECTS[2], "b", "f@example.com", ["eve@example.net"], bcc=["bob@EXAMPLE.com"]).send()


# What each term finds, by index into SUBJECTS.
TERMS = [
    ("bob@example.com", {0, 2}),  # To of one, Bcc of another; not bob.smith@
    ("BOB@EXAMPLE.COM", {0, 2}),
    ("  Bob <bob@example.com> ", {0, 2}),
    ("Carol@Example.org", {0}),  # Cc
    ("bob.smith@example.com", {1}),  # Bcc
    ("password reset", {0}),  # words of the subject, any case
    ("reset bob", {0}),  # each word somewhere
    ("DIGEST", {1}),
    ("example.net", {2}),  # part of a recipient
    ("nobody@example.com", set()),
    ("no such words", set()),
]


def found(queryset) -> set[int]:
    return {SUBJECTS.index(row.subject_text) for row in queryset}


@pytest.mark.parametrize(("term", "expected"), TERMS)
def test_queue_search(term, expected):
    send_three()
    assert found(Message.objects.search(term)) == expected


@pytest.mark.parametrize(("term", "expected"), TERMS)
def test_log_search(term, expected):
    send_three()
    assert send_all().sent == 3
    assert found(MessageLog.objects.search(term)) == expected


def changelist(admin_client, model: str, term: str) -> str:
    response = admin_client.get(reverse(f"admin:mailer_{model}_changelist"), {"q": term})
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("model", ["message", "messagelog"])
@pytest.mark.parametrize(("term", "expected"), [TERMS[1], TERMS[3], TERMS[4], TERMS[5], TERMS[9]])
def test_admin_search_boxes(admin_client, model, term, expected):
    send_three()
    if model == "messagelog":
        assert send_all().sent == 3
    page = changelist(admin_client, model, term)
    assert {i for i, subject in enumerate(SUBJECTS) if subject in page} == expected
    assert "An address (To, Cc or Bcc, any case)" in page  # the help text says what the box finds


def test_log_search_by_message_id_still_works():
    """A Message-ID without its angle brackets looks like an address: when no entry has that address, the
    search looks in the Message-IDs, as the log's search always did."""
    send_three()
    send_all()
    log = MessageLog.objects.get(subject_text=SUBJECTS[1])
    assert found(MessageLog.objects.search(log.message_id.strip("<>"))) == {1}
    assert found(MessageLog.objects.search(log.message_id)) == {1}


# --- The columns are written with every row ---------------------------------------------------------


def test_columns_of_queued_and_logged_rows():
    send_three()
    message = Message.objects.get(subject_text=SUBJECTS[0])
    assert message.recipients == "bob@example.com carol@example.org"
    send_all()
    log = MessageLog.objects.get(subject_text=SUBJECTS[0])
    assert log.recipients == "bob@example.com carol@example.org"
    assert log.recipient == "bob@example.com"  # the first address, indexed; the others in LogRecipient rows
    assert list(log.recipient_rows.values_list("address", flat=True)) == ["carol@example.org"]


def test_each_log_row_of_a_batch_gets_its_own_addresses():
    """The sender writes a batch's log rows in bulk: each address row must point at its own entry."""
    for n in range(30):
        EmailMessage(f"n{n}", "b", "f@example.com", [f"to{n}@example.com"], cc=[f"cc{n}@example.com"] * (n % 3)).send()
    assert send_all().sent == 30
    for log in MessageLog.objects.all():
        n = log.subject_text[1:]
        assert log.recipient == f"to{n}@example.com"
        expected = [f"cc{n}@example.com"] if int(n) % 3 else []
        assert list(log.recipient_rows.values_list("address", flat=True)) == expected, log.subject_text
    assert LogRecipient.objects.count() == 20


def test_made_messages_and_the_log_method_fill_the_columns():
    """make_message() + save() (2.x's way to queue), and MessageLog.objects.log()."""
    message = queue("Made", to=["Ann <ANN@example.com>"])
    assert (message.recipients, message.subject_text) == ("ann@example.com", "Made")
    log = MessageLog.objects.log(message, RESULT_FAILURE, "relay down")
    assert found_ids(MessageLog.objects.search("ann@example.com")) == {log.pk}


def found_ids(queryset) -> set[int]:
    return set(queryset.values_list("pk", flat=True))


def test_failures_and_dont_send_entries_are_logged_with_the_columns(failures):
    failures["Fails"] = smtplib.SMTPDataError(554, "no")
    EmailMessage("Fails", "b", "f@example.com", ["zed@example.com"]).send()
    send_all()
    [log] = MessageLog.objects.search("zed@example.com")
    assert log.result == RESULT_FAILURE
    DontSendEntry.objects.create(to_address="blocked@example.com")
    queue("Blocked", to=["blocked@example.com", "fine@example.com"])  # queued for fine@ only
    assert found_ids(Message.objects.search("fine@example.com"))
    assert not Message.objects.search("blocked@example.com").exists()


def test_without_message_data_the_log_keeps_the_columns(settings):
    settings.MAILER_EMAIL_LOG_MESSAGE_DATA = False
    send_three()
    send_all()
    assert found(MessageLog.objects.search("bob@example.com")) == {0, 2}
    assert MessageLog.objects.filter(message_data__isnull=False).count() == 0


def test_requeued_failures_keep_their_columns(admin_client, failures):
    failures.update({subject: smtplib.SMTPDataError(554, "no") for subject in SUBJECTS})
    send_three()
    send_all()
    logs = MessageLog.objects.filter(result=RESULT_FAILURE)
    Message.objects.all().delete()
    admin_client.post(
        reverse("admin:mailer_messagelog_changelist"),
        {"action": "requeue", "_selected_action": [log.pk for log in logs]},
    )
    assert found(Message.objects.search("bob@example.com")) == {0, 2}


# --- Rows written without the columns ----------------------------------------------------------------


def insert_as_2x(subject: str, to: list[str]) -> None:
    """A queue row and a log row as django-mailer 2.x writes them: no search columns (its data is a 2.x pickle)."""
    insert_2x_rows(legacy_2x(make_email(subject, to=to)), message_id="<old@example.org>")


def test_old_rows_are_found_after_the_fill(admin_client):
    insert_as_2x("Old reset", ["Old.Bob@example.com"])
    Message.objects.create(message_data="not a message", priority=PRIORITY_MEDIUM)  # undecodable
    MessageLog.objects.create(when_added=now(), priority=PRIORITY_MEDIUM, result=RESULT_DONT_SEND, log_message="")
    assert not Message.objects.search("old.bob@example.com").exists()
    assert not MessageLog.objects.search("old.bob@example.com").exists()

    call_command("mailer_fill_search", "--batch-size", "1", verbosity=0)

    assert [m.subject_text for m in Message.objects.search("old.bob@example.com")] == ["Old reset"]
    assert [m.subject_text for m in MessageLog.objects.search("OLD.BOB@example.com")] == ["Old reset"]
    for model in ("message", "messagelog"):
        assert "Old reset" in changelist(admin_client, model, "old.bob@example.com")
        assert "Old reset" in changelist(admin_client, model, "old reset")
    # Rows without (decodable) data are marked done, with empty columns: the next run reads nothing.
    assert not Message.objects.filter(recipients__isnull=True).exists()
    assert not MessageLog.objects.filter(recipients__isnull=True).exists()
    assert Message.objects.filter(recipients="").count() == 1
    assert MessageLog.objects.filter(recipient="old.bob@example.com").count() == 1


def test_the_fill_leaves_filled_rows_alone():
    send_three()
    send_all()
    insert_as_2x("Old", ["old@example.com"])
    from mailer.searchfill import fill

    assert fill(MessageLog) == 1
    assert fill(MessageLog) == 0
    assert MessageLog.objects.filter(recipient="old@example.com").count() == 1
    assert LogRecipient.objects.count() == 3  # the second address of each of the three sent


def test_log_recipients_go_with_their_log_rows():
    send_three()
    send_all()
    MessageLog.objects.purge_old_entries(0)
    assert not MessageLog.objects.exists()
    assert not LogRecipient.objects.exists()


def test_the_queue_filters_by_date_added(admin_client):
    """The queue's list has a date filter ("Past 7 days"...), as the log's has, next to the search box."""
    queue("Old one", to=["bob@example.com"], minutes_ago=60 * 24 * 10)
    queue("New one", to=["bob@example.com"])
    page = changelist(admin_client, "message", "bob@example.com")
    assert "Old one" in page and "New one" in page
    response = admin_client.get(reverse("admin:mailer_message_changelist"))
    assert "By when added" in response.content.decode()
    week_ago = (now() - timedelta(days=7)).isoformat()
    response = admin_client.get(
        reverse("admin:mailer_message_changelist"), {"q": "bob@example.com", "when_added__gte": week_ago}
    )
    page = response.content.decode()
    assert "New one" in page and "Old one" not in page


@pytest.mark.django_db(transaction=True)
def test_log_rows_written_one_at_a_time_keep_their_addresses(settings):
    """When the batch's bulk write fails (here a trigger refuses the low-priority row), the sender writes the
    rows one by one: each still gets its own address rows."""
    if connection.vendor != "sqlite":
        pytest.skip("the refusing trigger is written for SQLite")
    import mailer

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER refuse_low BEFORE INSERT ON mailer_messagelog WHEN NEW.priority = 3 "
            "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
        )
    try:
        for n, priority in enumerate([2, 3, 2]):
            mailer.send_mail(f"s{n}", "b", "f@example.com", [f"a{n}@example.com", f"b{n}@example.com"], priority)
        assert send_all().sent == 3
        assert sorted(log.subject_text for log in MessageLog.objects.all()) == ["s0", "s2"]
        for n in (0, 2):
            assert [log.subject_text for log in MessageLog.objects.search(f"b{n}@example.com")] == [f"s{n}"]
        assert LogRecipient.objects.count() == 2
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_low")
