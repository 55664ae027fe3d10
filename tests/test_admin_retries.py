"""The queue's admin pages with automatic retries (issue 14): attempts, next attempt and last error of each
message, the "state" filter, and the actions with messages waiting for a retry. Through the test client.

The waiting messages are made by the engine itself: a relay reply "451" to a real ``send_all()`` pass.
"""

import datetime
import re
import smtplib

import pytest
from django.urls import reverse
from django.utils import timezone, translation

from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, PRIORITY_MEDIUM, Message
from tests.support.backends import sent_subjects
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

GREYLISTED = "451 4.7.1 Greylisted, please try again in 5 minutes"


def url(name, *args):
    return reverse(f"admin:mailer_{name}", args=args)


@pytest.fixture
def waiting(failures):
    """A message the relay refused with a 451: queued again, waiting for its next attempt."""
    message = queue("greylisted", to=["grey@example.com"])
    failures["greylisted"] = smtplib.SMTPDataError(451, GREYLISTED.removeprefix("451 ").encode())
    assert send_all().sent == 0
    del failures["greylisted"]
    message.refresh_from_db()
    assert message.attempts == 1 and message.not_before > timezone.now()  # what the engine did
    return message


@pytest.fixture
def three_states(waiting):
    """One message of each state: due now, waiting for a retry, deferred."""
    due = queue("due", to=["due@example.com"])
    deferred = queue("put aside", to=["aside@example.com"])
    Message.objects.filter(pk=deferred.pk).update(priority=PRIORITY_DEFERRED)
    return due, waiting, deferred


def row(page, message):
    """The change list's row of ``message``."""
    [found] = [tr for tr in page.split("<tr") if f"/admin/mailer/message/{message.pk}/change/" in tr]
    return found


def cell(row_html, field):
    return re.search(rf'<td class="field-{field}">(.*?)</td>', row_html, re.DOTALL).group(1)


def listed(response):
    return sorted(m.subject for m in response.context["cl"].result_list)


# --- The columns and the change page -----------------------------------------------------------------


def test_change_list_shows_attempts_next_attempt_and_last_error(admin_client, three_states):
    due, waiting, deferred = three_states
    response = admin_client.get(url("message_changelist"))
    assert response.status_code == 200
    page = response.content.decode()

    waiting_row = row(page, waiting)
    assert cell(waiting_row, "failed_attempts") == "1"
    next_attempt = cell(waiting_row, "next_attempt")
    assert next_attempt not in ("due now", "deferred", "-")
    assert str(timezone.localtime(waiting.not_before).year) in next_attempt  # a date and time
    assert "Greylisted" in cell(waiting_row, "last_error_short")

    due_row = row(page, due)
    assert (cell(due_row, "failed_attempts"), cell(due_row, "next_attempt")) == ("0", "due now")
    assert cell(due_row, "last_error_short") == "-"
    assert cell(row(page, deferred), "next_attempt") == "deferred"

    for header in ("Attempts", "Send at / next attempt", "Last error"):
        assert f">{header}<" in page


def test_a_retry_whose_time_has_come_is_due_now(admin_client, waiting):
    Message.objects.filter(pk=waiting.pk).update(not_before=timezone.now() - datetime.timedelta(seconds=1))
    page = admin_client.get(url("message_changelist")).content.decode()
    assert cell(row(page, waiting), "next_attempt") == "due now"
    assert cell(row(page, waiting), "failed_attempts") == "1"


def test_a_row_of_an_older_version_shows_no_attempt(admin_client):
    # django-mailer 2.x (or this one before migration 0013) queues without the new columns: NULL.
    message = queue("old process")
    Message.objects.filter(pk=message.pk).update(attempts=None, not_before=None, last_error=None)
    response = admin_client.get(url("message_changelist"))
    page = response.content.decode()
    assert (cell(row(page, message), "failed_attempts"), cell(row(page, message), "next_attempt")) == ("0", "due now")
    assert admin_client.get(url("message_change", message.pk)).status_code == 200


def test_a_long_last_error_is_shortened_in_the_list_and_whole_on_the_change_page(admin_client, waiting):
    error = "451 4.3.0 " + "the mailbox server is busy, " * 10 + "<try> again & later\nsecond line of the reply"
    Message.objects.filter(pk=waiting.pk).update(last_error=error)

    page = admin_client.get(url("message_changelist")).content.decode()
    shown = cell(row(page, waiting), "last_error_short")
    title, text = re.fullmatch(r'<span title="(.*)">(.*)</span>', shown, re.DOTALL).groups()
    assert text.endswith("…") and len(text) < 80
    assert "&lt;try&gt; again &amp; later" in title  # all of it on hover, escaped

    page = admin_client.get(url("message_change", waiting.pk)).content.decode()
    assert "&lt;try&gt; again &amp; later<br>second line of the reply" in page
    assert "<try>" not in page


def test_change_page_of_a_waiting_message(admin_client, waiting):
    response = admin_client.get(url("message_change", waiting.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Greylisted, please try again in 5 minutes" in page
    for label in ("Attempts:", "Send at / next attempt:", "Last error:"):
        assert label in page
    # Shown, never edited: the engine owns them.
    for name in ("attempts", "not_before", "last_error"):
        assert not re.search(rf'<(input|textarea|select)[^>]*name="{name}"', page)

    # Saving the form (priority is editable) keeps them.
    before = Message.objects.values_list("attempts", "not_before", "last_error").get(pk=waiting.pk)
    response = admin_client.post(
        url("message_change", waiting.pk),
        {"priority": str(PRIORITY_MEDIUM), "attempts": "0", "not_before": "", "last_error": "", "_save": "Save"},
    )
    assert response.status_code == 302
    assert Message.objects.values_list("attempts", "not_before", "last_error").get(pk=waiting.pk) == before


# --- The state filter --------------------------------------------------------------------------------


def test_state_filter(admin_client, three_states, waiting):
    retry_passed = queue("retry time passed")
    Message.objects.filter(pk=retry_passed.pk).update(
        attempts=2, not_before=timezone.now() - datetime.timedelta(minutes=1), last_error="421 busy"
    )
    changelist = url("message_changelist")
    assert listed(admin_client.get(changelist, {"state": "due"})) == ["due", "retry time passed"]
    assert listed(admin_client.get(changelist, {"state": "waiting"})) == ["greylisted"]
    assert listed(admin_client.get(changelist, {"state": "deferred"})) == ["put aside"]
    assert len(listed(admin_client.get(changelist))) == 4

    page = admin_client.get(changelist).content.decode()
    for value, label in [("due", "Due now"), ("waiting", "Waiting for a retry"), ("deferred", "Deferred")]:
        assert re.search(rf'<a href="\?state={value}">\s*{label}\s*</a>', page, re.IGNORECASE)


def test_state_filter_agrees_with_the_senders(admin_client, three_states):
    due_now = listed(admin_client.get(url("message_changelist"), {"state": "due"}))
    send_all()
    assert sent_subjects() == due_now == ["due"]


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("ru", ["к отправке сейчас", "ожидает повторной попытки", "Отправка / следующая попытка"]),
        ("ja", ["今すぐ送信", "再試行待ち"]),
    ],
)
def test_retry_columns_and_filter_are_translated(admin_client, three_states, language, words):
    with translation.override(language):
        page = admin_client.get(url("message_changelist")).content.decode()
    for word in words:
        assert word in page


# --- Actions -----------------------------------------------------------------------------------------


def post_action(client, action, ids):
    return client.post(
        url("message_changelist"), {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True
    )


def page_messages(response):
    return [str(m) for m in response.context["messages"]]


def test_retry_action_makes_waiting_messages_due_now_and_requeues_deferred_ones(admin_client, three_states):
    due, waiting, deferred = three_states
    response = post_action(admin_client, "retry_deferred", [waiting.pk, deferred.pk])
    assert page_messages(response) == [
        "1 message waiting for a retry is due now.",
        "1 deferred message put back on the queue.",
    ]
    waiting.refresh_from_db()
    assert waiting.not_before is None
    assert (waiting.attempts, waiting.last_error) == (1, GREYLISTED)  # the history stays
    assert Message.objects.get(pk=deferred.pk).priority == PRIORITY_MEDIUM
    assert send_all().sent == 3
    assert sorted(sent_subjects()) == ["due", "greylisted", "put aside"]


def test_retry_action_with_waiting_messages_only(admin_client, three_states):
    due, waiting, deferred = three_states
    response = post_action(admin_client, "retry_deferred", [due.pk, waiting.pk])
    assert page_messages(response) == ["1 message waiting for a retry is due now."]
    assert Message.objects.get(pk=deferred.pk).priority == PRIORITY_DEFERRED  # not selected
    assert Message.objects.due().count() == 2


def test_retry_action_leaves_unselected_waiting_messages_waiting(admin_client, three_states):
    due, waiting, deferred = three_states
    response = post_action(admin_client, "retry_deferred", [deferred.pk])
    assert page_messages(response) == ["1 deferred message put back on the queue."]
    assert list(Message.objects.waiting().values_list("pk", flat=True)) == [waiting.pk]


def test_send_action_leaves_waiting_messages_for_their_time_and_says_so(admin_client, three_states):
    due, waiting, deferred = three_states
    response = post_action(admin_client, "send_messages", [due.pk, waiting.pk])
    assert sent_subjects() == ["due"]
    assert page_messages(response) == [
        "1 message sent.",
        "1 message not sent: it is waiting for a retry (retry it to send it now).",
    ]
    assert Message.objects.get(pk=waiting.pk).not_before == waiting.not_before


def test_move_action_keeps_the_retry_time(admin_client, waiting):
    post_action(admin_client, "move_to_high", [waiting.pk])
    moved = Message.objects.get(pk=waiting.pk)
    assert (moved.priority, moved.not_before, moved.attempts) == (1, waiting.not_before, 1)
