"""The queue's admin pages with scheduling, expiry and relay pauses (issue 15), through the test client.

Scheduled mail is queued through ``mailer.send_mail(send_at=...)``; a message waiting for a retry is made by
the engine itself (a relay reply "451"), and a paused relay too (a "454 Throttling" reply to a real pass).
"""

import datetime
import re
import smtplib

import pytest
from django.db import DEFAULT_DB_ALIAS, connection
from django.urls import reverse
from django.utils import formats, timezone, translation

import mailer
from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, PRIORITY_HIGH, Message, RelayState
from mailer.postgres import Listener
from tests.support.backends import sent_subjects

pytestmark = pytest.mark.django_db

THROTTLED = smtplib.SMTPRecipientsRefused({"to@example.com": (454, b"4.7.0 Throttling failure: Maximum sending rate")})


def url(name, *args):
    return reverse(f"admin:mailer_{name}", args=args)


def later(**delta):
    return timezone.now() + datetime.timedelta(**delta)


def send(subject, **times):
    """Queue a message through the API; the queued row."""
    mailer.send_mail(subject, f"body of {subject}", "from@example.com", ["to@example.com"], **times)
    return Message.objects.order_by("-pk").first()


@pytest.fixture
def waiting(failures):
    """A message the relay refused with a 451: queued again, waiting for its next attempt."""
    message = send("greylisted")
    failures["greylisted"] = smtplib.SMTPDataError(451, b"4.7.1 Greylisted, please try again in 5 minutes")
    assert send_all().sent == 0
    del failures["greylisted"]
    message.refresh_from_db()
    assert message.attempts == 1 and message.not_before > timezone.now()
    return message


@pytest.fixture
def queue_of_each(waiting):
    """Due now, scheduled for tomorrow, waiting for a retry, deferred; and expiring at various times."""
    messages = {
        "due": send("due"),
        "scheduled": send("tomorrow", send_at=later(days=1), expires_at=later(days=1, minutes=30)),
        "waiting": waiting,
        "deferred": send("put aside"),
        "expiring": send("one-time code", expires_at=later(minutes=10)),
        "expired": send("too late", expires_at=later(seconds=-5)),  # accepted: the first sender logs it
    }
    Message.objects.filter(pk=messages["deferred"].pk).update(priority=PRIORITY_DEFERRED)
    return messages


def row(page, message):
    [found] = [tr for tr in page.split("<tr") if f"/admin/mailer/message/{message.pk}/change/" in tr]
    return found


def cell(row_html, field):
    return re.search(rf'<td class="field-{field}">(.*?)</td>', row_html, re.DOTALL).group(1)


def listed(response):
    return sorted(m.subject for m in response.context["cl"].result_list)


def post_action(client, action, ids):
    return client.post(
        url("message_changelist"), {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True
    )


def page_messages(response):
    return [str(m) for m in response.context["messages"]]


# --- Columns and the change page ---------------------------------------------------------------------


def test_change_list_shows_when_each_message_is_due_and_when_it_expires(admin_client, queue_of_each):
    page = admin_client.get(url("message_changelist")).content.decode()
    for header in ("Send at / next attempt", "Expires at"):
        assert f">{header}<" in page

    scheduled = row(page, queue_of_each["scheduled"])
    send_at = timezone.localtime(queue_of_each["scheduled"].not_before)
    assert cell(scheduled, "next_attempt") == formats.localize(send_at)  # "1:16 p.m." after noon, not "13:16"
    assert cell(scheduled, "failed_attempts") == "0"  # not a retry: its first attempt
    assert "expired" not in cell(scheduled, "expiry") and str(send_at.year) in cell(scheduled, "expiry")

    assert cell(row(page, queue_of_each["due"]), "next_attempt") == "due now"
    assert cell(row(page, queue_of_each["due"]), "expiry") == "-"  # never expires
    assert cell(row(page, queue_of_each["expired"]), "expiry").endswith(" (expired)")
    assert "expired" not in cell(row(page, queue_of_each["expiring"]), "expiry")


def test_change_page_shows_the_send_time_and_the_expiry_and_does_not_edit_them(admin_client, queue_of_each):
    message = queue_of_each["scheduled"]
    page = admin_client.get(url("message_change", message.pk)).content.decode()
    assert "Send at / next attempt:" in page and "Expires at:" in page
    assert page.count(str(timezone.localtime(message.not_before).year)) >= 2
    for name in ("not_before", "expires_at"):
        assert not re.search(rf'<(input|textarea|select)[^>]*name="{name}"', page)

    response = admin_client.post(
        url("message_change", message.pk), {"priority": str(PRIORITY_HIGH), "expires_at": "", "_save": "Save"}
    )
    assert response.status_code == 302
    saved = Message.objects.get(pk=message.pk)
    assert (saved.priority, saved.not_before, saved.expires_at) == (
        PRIORITY_HIGH,
        message.not_before,
        message.expires_at,
    )


def test_the_columns_sort_by_due_time_and_expiry(admin_client, queue_of_each):
    response = admin_client.get(url("message_changelist"))
    columns = response.context["cl"].list_display
    by_expiry = admin_client.get(url("message_changelist"), {"o": str(columns.index("expiry"))})
    ordered = [m.subject for m in by_expiry.context["cl"].result_list if m.expires_at is not None]
    assert ordered == ["too late", "one-time code", "tomorrow"]
    by_due = admin_client.get(url("message_changelist"), {"o": f"-{columns.index('next_attempt')}"})
    waiting_first = [m.subject for m in by_due.context["cl"].result_list if m.not_before is not None]
    assert waiting_first == ["tomorrow", "greylisted"]


# --- Filters -----------------------------------------------------------------------------------------


def test_state_filter_tells_scheduled_mail_from_mail_waiting_for_a_retry(admin_client, queue_of_each):
    changelist = url("message_changelist")
    assert listed(admin_client.get(changelist, {"state": "scheduled"})) == ["tomorrow"]
    assert listed(admin_client.get(changelist, {"state": "waiting"})) == ["greylisted"]
    assert listed(admin_client.get(changelist, {"state": "due"})) == ["due", "one-time code", "too late"]
    assert listed(admin_client.get(changelist, {"state": "deferred"})) == ["put aside"]
    page = admin_client.get(changelist).content.decode()
    assert re.search(r'<a href="\?state=scheduled">\s*Scheduled for later\s*</a>', page, re.IGNORECASE)


def test_a_scheduled_message_whose_time_has_come_is_due(admin_client, queue_of_each):
    Message.objects.filter(pk=queue_of_each["scheduled"].pk).update(not_before=later(seconds=-1))
    changelist = url("message_changelist")
    assert "tomorrow" in listed(admin_client.get(changelist, {"state": "due"}))
    assert listed(admin_client.get(changelist, {"state": "scheduled"})) == []


def test_expiry_filter(admin_client, queue_of_each):
    changelist = url("message_changelist")
    assert listed(admin_client.get(changelist, {"expiry": "expired"})) == ["too late"]
    assert listed(admin_client.get(changelist, {"expiry": "hour"})) == ["one-time code"]
    assert listed(admin_client.get(changelist, {"expiry": "day"})) == ["one-time code"]
    assert listed(admin_client.get(changelist, {"expiry": "never"})) == ["due", "greylisted", "put aside"]
    # Both filters at once: scheduled, and expiring within two days.
    Message.objects.filter(pk=queue_of_each["scheduled"].pk).update(expires_at=later(hours=20))
    assert listed(admin_client.get(changelist, {"expiry": "day", "state": "scheduled"})) == ["tomorrow"]
    page = admin_client.get(changelist).content.decode()
    for value, label in [("expired", "Expired"), ("hour", "Expires within an hour"), ("never", "Never expires")]:
        assert re.search(rf'<a href="\?expiry={value}">\s*{label}\s*</a>', page, re.IGNORECASE)


def test_the_expired_filter_lists_what_the_next_sender_logs_as_expired(admin_client, queue_of_each):
    expired = listed(admin_client.get(url("message_changelist"), {"expiry": "expired"}))
    result = send_all()
    assert result.failed == len(expired) == 1
    assert "too late" not in sent_subjects()


# --- Actions -----------------------------------------------------------------------------------------


def test_send_now_makes_scheduled_and_waiting_messages_due_and_the_senders_send_them(admin_client, queue_of_each):
    chosen = [queue_of_each[name].pk for name in ("due", "scheduled", "waiting", "deferred")]
    response = post_action(admin_client, "send_now", chosen)
    assert page_messages(response) == [
        "2 scheduled or waiting messages are due now: senders take them at their next pass.",
        "1 deferred message left deferred: retry it first.",
    ]
    scheduled = Message.objects.get(pk=queue_of_each["scheduled"].pk)
    assert scheduled.not_before is None and scheduled.expires_at == queue_of_each["scheduled"].expires_at
    assert Message.objects.get(pk=queue_of_each["waiting"].pk).attempts == 1  # its history stays
    assert Message.objects.get(pk=queue_of_each["deferred"].pk).priority == PRIORITY_DEFERRED

    send_all()
    assert sorted(sent_subjects()) == ["due", "greylisted", "one-time code", "tomorrow"]


@pytest.mark.django_db(transaction=True)  # the notification goes out when the action's transaction commits
def test_send_now_wakes_runmailer_pg_at_once(admin_user, client):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    client.force_login(admin_user)
    message = send("tomorrow", send_at=later(days=1))
    listener = Listener(DEFAULT_DB_ALIAS)  # what runmailer_pg waits on
    listener.connect()
    try:
        post_action(client, "send_now", [message.pk])
        assert listener.wait(5)
        post_action(client, "send_now", [message.pk])  # nothing made due: no pass to wake for
        assert not listener.wait(0.5)
    finally:
        listener.close()


def test_send_now_with_nothing_waiting_says_so(admin_client, queue_of_each):
    response = post_action(admin_client, "send_now", [queue_of_each["due"].pk])
    assert page_messages(response) == [
        "0 scheduled or waiting messages are due now: senders take them at their next pass."
    ]
    assert response.context["messages"]._loaded_messages[0].level_tag == "info"


def test_send_now_is_a_queryset_method_a_project_can_call(queue_of_each):
    later_ones = Message.objects.filter(pk__in=[queue_of_each["scheduled"].pk, queue_of_each["due"].pk])
    assert later_ones.make_due() == 1
    assert Message.objects.scheduled().count() == 0
    assert Message.objects.waiting_for_retry().count() == 1  # not selected
    assert Message.objects.make_due() == 1
    assert Message.objects.waiting().count() == 0


def test_send_selected_leaves_scheduled_mail_for_its_time_and_says_so(admin_client, queue_of_each):
    chosen = [queue_of_each[name].pk for name in ("due", "scheduled", "waiting")]
    response = post_action(admin_client, "send_messages", chosen)
    assert sent_subjects() == ["due"]
    assert page_messages(response) == [
        "1 message sent.",
        "1 message not sent: it is waiting for a retry (retry it to send it now).",
        "1 message not sent: it is scheduled for later (send it now to make it due).",
    ]


def test_retry_action_does_not_make_scheduled_mail_due(admin_client, queue_of_each):
    post_action(admin_client, "retry_deferred", [queue_of_each["scheduled"].pk, queue_of_each["waiting"].pk])
    assert list(Message.objects.waiting().values_list("pk", flat=True)) == [queue_of_each["scheduled"].pk]


# --- Paused relays -----------------------------------------------------------------------------------


@pytest.fixture
def paused(settings, failures):
    """The default relay answered "454 Throttling" to a real pass: paused for every sender for 5 minutes."""
    settings.MAILER_RETRY_DELAY = 300
    failures["slow down"] = THROTTLED
    send("slow down")
    send_all()
    failures.clear()
    return RelayState.objects.get(relay="default")


def test_the_queue_page_says_which_relay_is_paused_until_when(admin_client, paused):
    page = admin_client.get(url("message_changelist")).content.decode()
    [note] = re.findall(r'<p class="mailer-paused-relay" data-relay="default">(.*?)</p>', page, re.DOTALL)
    assert "The relay “default” asked to slow down: the senders send it nothing until" in note
    assert str(timezone.localtime(paused.paused_until).year) in note

    RelayState.objects.update(paused_until=later(seconds=-1))  # the pause is over
    assert "mailer-paused-relay" not in admin_client.get(url("message_changelist")).content.decode()


def test_relay_states_are_shown_read_only(admin_client, paused):
    response = admin_client.get(url("relaystate_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    for header in ("Relay", "Paused until", "Pause seconds", "Last reservation"):
        assert f">{header}<" in page
    assert re.search(r'<td class="field-paused_until[^"]*">[^<]*\d{4}', page) and ">300.0<" in page
    assert response.context["action_form"] is None or not response.context["cl"].actions  # nothing to delete

    page = admin_client.get(url("relaystate_change", paused.pk)).content.decode()
    assert not re.search(r'<(input|textarea|select)[^>]*name="(relay|paused_until|pause_seconds)"', page)
    assert admin_client.post(url("relaystate_change", paused.pk), {"paused_until": ""}).status_code == 403
    assert admin_client.get(url("relaystate_add")).status_code == 403
    assert admin_client.post(url("relaystate_delete", paused.pk), {"post": "yes"}).status_code == 403
    assert RelayState.objects.get(pk=paused.pk).paused_until == paused.paused_until


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("ru", ["запланировано на потом", "Срок действия до", "(просрочено)", "попросил снизить скорость"]),
        ("ja", ["送信予約中", "有効期限", "(期限切れ)", "送信速度を落とす"]),
    ],
)
def test_scheduling_columns_filters_and_pauses_are_translated(admin_client, paused, language, words):
    send("too late", expires_at=later(seconds=-5))
    with translation.override(language):
        page = admin_client.get(url("message_changelist")).content.decode()
    for word in words:
        assert word in page
