"""The admin pages of the queue, the log and the don't-send list, through the test client."""

import datetime
import re
import smtplib

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from mailer.admin import MessageAdmin
from mailer.engine import send_all
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_MEDIUM,
    RESULT_DONT_SEND,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
)
from mailer.routing import mailers_configured
from tests.support import backends
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db


def url(name, *args):
    return reverse(f"admin:mailer_{name}", args=args)


@pytest.fixture
def queued():
    return [
        queue("first subject", to=["ann@example.com"], priority=PRIORITY_HIGH),
        queue("second subject", to=["bob@example.com"], body="plain body of second subject"),
        queue("third subject", to=["cat@example.com"]),
    ]


# --- Pages render -----------------------------------------------------------------------------------


def test_message_changelist_and_change_page(admin_client, queued):
    response = admin_client.get(url("message_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    for message, to in zip(queued, ["ann@example.com", "bob@example.com", "cat@example.com"], strict=True):
        assert message.subject in page
        assert to in page

    response = admin_client.get(url("message_change", queued[1].pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "second subject" in page
    assert "bob@example.com" in page
    assert "plain body of second subject" in page


def test_message_change_form_has_no_message_data_field(admin_client, queued):
    page = admin_client.get(url("message_change", queued[0].pk)).content.decode()
    assert not re.search(r"<(input|textarea|select)[^>]*name=\"message_data\"", page)
    assert 'name="message_data"' not in page
    assert queued[0].message_data not in page  # nor the raw (signed) data


def test_message_change_cannot_rewrite_message_data(admin_client, queued):
    message = queued[0]
    before = Message.objects.get(pk=message.pk).message_data
    response = admin_client.post(
        url("message_change", message.pk),
        {"priority": str(PRIORITY_DEFERRED), "message_data": "garbage", "_save": "Save"},
    )
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.priority == PRIORITY_DEFERRED  # the editable field changed...
    assert message.message_data == before  # ...the data did not


def test_message_add_is_not_offered(admin_client):
    assert admin_client.get(url("message_add")).status_code == 403


def test_undecodable_message_still_renders(admin_client):
    broken = Message.objects.create(message_data="garbage!!")
    assert admin_client.get(url("message_changelist")).status_code == 200
    assert admin_client.get(url("message_change", broken.pk)).status_code == 200


@pytest.fixture
def logs(queued, legacy_policy):
    """Send two, fail one: two success rows and one failure row, the failed message deferred.

    With 2.3.2's policy (``legacy_policy``: MAILER_RETRY_MAX_ATTEMPTS=1, MAILER_DEFER_PERMANENT_FAILURES=True), so
    that a deferred message is there for the actions that deal with those (retry_deferred, requeue).
    """
    settings = legacy_policy
    settings.MAILER_EMAIL_BACKEND = f"{backends.HERE}.FailingBackend"
    backends.FAILURES["third subject"] = smtplib.SMTPRecipientsRefused({"cat@example.com": (550, b"no")})
    try:
        send_all()
    finally:
        backends.FAILURES.clear()
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 2
    return MessageLog.objects.order_by("pk")


def test_messagelog_changelist_and_change_page(admin_client, logs):
    response = admin_client.get(url("messagelog_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    for subject, to in [("first subject", "ann"), ("second subject", "bob"), ("third subject", "cat")]:
        assert subject in page
        assert f"{to}@example.com" in page

    log = next(log for log in logs if log.subject == "first subject")
    response = admin_client.get(url("messagelog_change", log.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "first subject" in page
    assert "ann@example.com" in page
    assert 'name="message_data"' not in page


def test_messagelog_filter_by_result(admin_client, logs):
    page = admin_client.get(url("messagelog_changelist"), {"result__exact": RESULT_FAILURE}).content.decode()
    assert "third subject" in page
    assert "first subject" not in page and "second subject" not in page

    page = admin_client.get(url("messagelog_changelist"), {"result__exact": RESULT_SUCCESS}).content.decode()
    assert "first subject" in page and "second subject" in page
    assert "third subject" not in page


def test_messagelog_filter_by_date_attempted(admin_client, logs):
    old = next(log for log in logs if log.subject == "first subject")
    MessageLog.objects.filter(pk=old.pk).update(when_attempted=timezone.now() - datetime.timedelta(days=30))
    response = admin_client.get(url("messagelog_changelist"))
    spec = next(spec for spec in response.context["cl"].filter_specs if spec.field_path == "when_attempted")
    past_week = next(choice for choice in spec.choices(response.context["cl"]) if choice["display"] == "Past 7 days")

    response = admin_client.get(url("messagelog_changelist") + past_week["query_string"])
    assert response.context["cl"].result_count == 2
    assert "first subject" not in response.content.decode()


def test_messagelog_search_by_message_id(admin_client, logs):
    second = next(log for log in logs if log.subject == "second subject")
    assert second.message_id
    response = admin_client.get(url("messagelog_changelist"), {"q": second.message_id.strip("<>")})
    assert response.status_code == 200
    page = response.content.decode()
    assert "second subject" in page
    assert "first subject" not in page and "third subject" not in page
    assert response.context["cl"].result_count == 1


@pytest.mark.skipif(not mailers_configured(), reason="MAILERS: Django 6.1+ (the tests' settings have it there)")
def test_the_mailers_alias_is_shown_and_filters_the_queue_and_the_log(admin_client, queued):
    Message.objects.filter(pk=queued[0].pk).update(mailer="bulk")
    assert "column-mailer" in admin_client.get(url("message_changelist")).content.decode()
    page = admin_client.get(url("message_changelist"), {"mailer": "bulk"}).content.decode()
    assert "first subject" in page and "second subject" not in page
    assert "bulk" in admin_client.get(url("message_change", queued[0].pk)).content.decode()

    send_all()
    log = MessageLog.objects.get(mailer="bulk")
    assert log.subject == "first subject"
    response = admin_client.get(url("messagelog_changelist"), {"mailer": "bulk"})
    assert response.context["cl"].result_count == 1
    assert "bulk" in admin_client.get(url("messagelog_change", log.pk)).content.decode()


def test_dontsendentry_pages(admin_client):
    entry = DontSendEntry.objects.create(to_address="nobody@example.com", when_added=timezone.now())
    response = admin_client.get(url("dontsendentry_changelist"))
    assert response.status_code == 200
    assert "nobody@example.com" in response.content.decode()
    response = admin_client.get(url("dontsendentry_change", entry.pk))
    assert response.status_code == 200
    assert "nobody@example.com" in response.content.decode()
    assert admin_client.get(url("dontsendentry_changelist"), {"q": "nobody"}).context["cl"].result_count == 1


# --- The send action --------------------------------------------------------------------------------


def post_action(client, action, ids, changelist="message_changelist"):
    return client.post(
        url(changelist), {"action": action, "_selected_action": [str(pk) for pk in ids], "index": 0}, follow=True
    )


def run_action(client, ids):
    return post_action(client, "send_messages", ids)


def test_send_messages_action_sends_the_selected_messages_only(admin_client, queued):
    response = run_action(admin_client, [queued[0].pk, queued[2].pk])
    assert response.status_code == 200
    assert sorted(email.subject for email in mail.outbox) == ["first subject", "third subject"]
    assert list(Message.objects.values_list("pk", flat=True)) == [queued[1].pk]
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 2
    assert "2 messages sent" in response.content.decode()


def test_send_messages_action_skips_deferred_selected_messages(admin_client, queued):
    Message.objects.filter(pk=queued[0].pk).update(priority=PRIORITY_DEFERRED)
    run_action(admin_client, [queued[0].pk, queued[1].pk])
    assert [email.subject for email in mail.outbox] == ["second subject"]


@pytest.fixture
def staff_client(client, django_user_model):
    def make(*codenames):
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="mailer", codename__in=codenames))
        client.force_login(user)
        return client

    return make


def test_staff_without_change_permission_cannot_send(staff_client, queued):
    client = staff_client("view_message")
    assert client.get(url("message_changelist")).status_code == 200
    response = run_action(client, [m.pk for m in queued])
    assert response.status_code in (200, 403)
    assert mail.outbox == []
    assert Message.objects.count() == 3
    assert MessageLog.objects.count() == 0


def test_staff_with_change_permission_can_send(staff_client, queued):
    client = staff_client("view_message", "change_message")
    run_action(client, [queued[1].pk])
    assert [email.subject for email in mail.outbox] == ["second subject"]


# --- Priority counts --------------------------------------------------------------------------------


def test_changelist_shows_the_queue_by_priority(admin_client, queued):
    Message.objects.filter(pk=queued[2].pk).update(priority=PRIORITY_DEFERRED)
    queue("fourth subject", priority=PRIORITY_LOW)
    response = admin_client.get(url("message_changelist"))
    counts = [(str(label), count) for label, count, _query in response.context["priority_counts"]]
    assert counts == [("high", 1), ("medium", 1), ("low", 1), ("deferred", 1), ("total", 4)]
    page = response.content.decode()
    assert 'id="mailer-priority-counts"' in page
    assert '<a href="?priority__exact=4" data-count="1">Deferred <strong>1</strong></a>' in page
    assert '<a href="?" data-count="4">Total <strong>4</strong></a>' in page

    # The counts are the whole queue's, whatever the list shows.
    response = admin_client.get(url("message_changelist"), {"priority__exact": PRIORITY_HIGH})
    assert response.context["cl"].result_count == 1
    assert response.context["priority_counts"][-1][1] == 4


def test_priority_counts_take_one_query(rf, admin_user, queued, django_assert_num_queries):
    request = rf.get("/")
    request.user = admin_user
    with django_assert_num_queries(1):
        MessageAdmin(Message, admin.site).priority_counts(request)


def test_priority_counts_of_an_empty_queue(admin_client):
    page = admin_client.get(url("message_changelist")).content.decode()
    assert '<a href="?" data-count="0">Total <strong>0</strong></a>' in page


# --- Queue actions ----------------------------------------------------------------------------------


def page_messages(response):
    return [str(m) for m in response.context["messages"]]


def priorities():
    return dict(Message.objects.values_list("pk", "priority"))


def test_retry_deferred_action_requeues_the_selected_deferred_messages(admin_client, queued):
    first, second, third = queued
    Message.objects.filter(pk__in=[first.pk, second.pk]).update(priority=PRIORITY_DEFERRED)
    response = post_action(admin_client, "retry_deferred", [first.pk, third.pk])
    assert priorities() == {first.pk: PRIORITY_MEDIUM, second.pk: PRIORITY_DEFERRED, third.pk: PRIORITY_MEDIUM}
    assert dict(Message.objects.values_list("pk", "retry_count")) == {first.pk: 1, second.pk: 0, third.pk: 0}
    assert page_messages(response) == ["1 deferred message put back on the queue."]


def test_retry_deferred_action_honours_max_retries(admin_client, queued, settings):
    settings.MAILER_EMAIL_MAX_RETRIES = 2
    Message.objects.update(priority=PRIORITY_DEFERRED)
    Message.objects.filter(pk=queued[0].pk).update(retry_count=2)
    response = post_action(admin_client, "retry_deferred", [m.pk for m in queued])
    assert priorities() == {
        queued[0].pk: PRIORITY_DEFERRED,
        queued[1].pk: PRIORITY_MEDIUM,
        queued[2].pk: PRIORITY_MEDIUM,
    }
    assert page_messages(response) == [
        "2 deferred messages put back on the queue.",
        "1 message stays deferred: it reached MAILER_EMAIL_MAX_RETRIES.",
    ]


@pytest.mark.parametrize(
    ("action", "priority", "label"), [("move_to_high", PRIORITY_HIGH, "high"), ("move_to_low", PRIORITY_LOW, "low")]
)
def test_move_actions_change_the_priority_of_queued_messages_only(admin_client, queued, action, priority, label):
    first, second, third = queued
    Message.objects.filter(pk=third.pk).update(priority=PRIORITY_DEFERRED)
    response = post_action(admin_client, action, [first.pk, second.pk, third.pk])
    assert priorities() == {first.pk: priority, second.pk: priority, third.pk: PRIORITY_DEFERRED}
    assert Message.objects.get(pk=third.pk).retry_count == 0
    assert page_messages(response) == [
        f"2 messages moved to {label} priority.",
        "1 deferred message left deferred: retry it first.",
    ]


def test_move_to_low_leaves_unselected_messages_alone(admin_client, queued):
    post_action(admin_client, "move_to_low", [queued[1].pk])
    assert priorities() == {queued[0].pk: PRIORITY_HIGH, queued[1].pk: PRIORITY_LOW, queued[2].pk: PRIORITY_MEDIUM}


def test_add_to_dont_send_action_lists_every_recipient_once(admin_client):
    DontSendEntry.objects.create(to_address="Listed@Example.com", when_added=timezone.now())
    message = queue("many recipients")
    email = message.email  # set after queueing, which would drop the listed address
    email.to = ["Ann <ANN@example.com>", "listed@example.com"]
    email.cc = ["bob@example.com"]
    email.bcc = ["Cat <cat@example.com>"]
    message.email = email
    message.save()
    other = queue("other", to=["ann@example.com"])
    broken = Message.objects.create(message_data="garbage!!")
    before = timezone.now()

    response = post_action(admin_client, "add_to_dont_send", [message.pk, other.pk, broken.pk])
    entries = DontSendEntry.objects.all()
    # Entries are stored lower-cased (the one created above too); no duplicate of it was added.
    assert sorted(e.to_address for e in entries) == [
        "ann@example.com",
        "bob@example.com",
        "cat@example.com",
        "listed@example.com",
    ]
    assert all(e.when_added >= before for e in entries if e.to_address != "listed@example.com")
    assert page_messages(response) == [
        "3 addresses added to the don't-send list.",
        "1 address was already on the list.",
        "1 message skipped: its data is missing or can't be decoded.",
    ]
    assert Message.objects.count() == 3  # the messages stay queued; sending drops the listed addresses

    response = post_action(admin_client, "add_to_dont_send", [other.pk])
    assert DontSendEntry.objects.count() == 4
    assert page_messages(response) == [
        "0 addresses added to the don't-send list.",
        "1 address was already on the list.",
    ]


# --- Requeueing from the log ------------------------------------------------------------------------


def test_requeue_action_queues_a_copy_of_each_failure(admin_client, logs):
    failure = logs.get(result=RESULT_FAILURE)
    success = logs.filter(result=RESULT_SUCCESS).first()
    assert failure.priority == PRIORITY_DEFERRED  # the message was deferred before it was logged
    assert not Message.objects.non_deferred().exists()

    response = post_action(admin_client, "requeue", [failure.pk, success.pk], "messagelog_changelist")
    copy = Message.objects.non_deferred().get()
    assert copy.subject == "third subject"
    assert copy.to_addresses == ["cat@example.com"]
    assert (copy.priority, copy.retry_count, copy.mailer) == (PRIORITY_MEDIUM, 0, failure.mailer)
    assert failure.message_id and copy.email.extra_headers["Message-ID"] == failure.message_id
    assert MessageLog.objects.count() == 3  # the log is left as it was
    assert page_messages(response) == ["1 message queued again.", "1 entry skipped: not a failure."]

    send_all()
    assert [email.subject for email in mail.outbox] == ["first subject", "second subject", "third subject"]


def test_requeue_action_keeps_the_priority_and_skips_missing_data(admin_client, queued):
    high = MessageLog.objects.log(queued[0], RESULT_FAILURE, "refused")
    empty = MessageLog.objects.create(
        message_data=None, when_added=timezone.now(), priority=PRIORITY_LOW, result=RESULT_FAILURE
    )
    garbage = MessageLog.objects.create(
        message_data="garbage!!", when_added=timezone.now(), priority=PRIORITY_LOW, result=RESULT_FAILURE
    )
    dont_send = MessageLog.objects.log(queued[1], RESULT_DONT_SEND)
    Message.objects.all().delete()

    response = post_action(
        admin_client, "requeue", [high.pk, empty.pk, garbage.pk, dont_send.pk], "messagelog_changelist"
    )
    copy = Message.objects.get()
    assert (copy.subject, copy.priority) == ("first subject", PRIORITY_HIGH)
    assert page_messages(response) == [
        "1 message queued again.",
        "1 entry skipped: not a failure.",
        "2 messages skipped: their data is missing or can't be decoded.",
    ]


# --- Permissions ------------------------------------------------------------------------------------

# (action, its changelist, the permissions a staff user needs for it besides viewing the list)
ACTIONS = [
    ("send_messages", "message_changelist", ["change_message"]),
    ("send_now", "message_changelist", ["change_message"]),
    ("retry_deferred", "message_changelist", ["change_message"]),
    ("move_to_high", "message_changelist", ["change_message"]),
    ("move_to_low", "message_changelist", ["change_message"]),
    ("add_to_dont_send", "message_changelist", ["add_dontsendentry"]),
    ("requeue", "messagelog_changelist", ["add_message"]),
]


def offered_actions(client, changelist):
    response = client.get(url(changelist))
    assert response.status_code == 200
    form = response.context["action_form"]
    return {name for name, _label in form.fields["action"].choices if name} if form else set()


def state():
    """Everything an action could change."""
    return (
        list(Message.objects.order_by("pk").values_list("pk", "priority", "retry_count", "not_before", "message_data")),
        list(MessageLog.objects.order_by("pk").values_list("pk", "result", "message_data")),
        list(DontSendEntry.objects.order_by("pk").values_list("pk", "to_address")),
    )


@pytest.fixture
def everything(logs):
    """A queue with a deferred, a queued and a scheduled message, failure and success log rows."""
    queue("queued subject", to=["dan@example.com"])
    queue("scheduled subject", to=["eve@example.com"], not_before=timezone.now() + datetime.timedelta(hours=1))
    return {
        "message_changelist": list(Message.objects.values_list("pk", flat=True)),
        "messagelog_changelist": list(MessageLog.objects.values_list("pk", flat=True)),
    }


def test_superuser_is_offered_every_action(admin_client):
    assert offered_actions(admin_client, "message_changelist") == {
        "delete_selected",
        "send_messages",
        "send_now",
        "retry_deferred",
        "move_to_high",
        "move_to_low",
        "add_to_dont_send",
    }
    assert offered_actions(admin_client, "messagelog_changelist") == {"delete_selected", "requeue"}


@pytest.mark.parametrize(("action", "changelist", "needed"), ACTIONS)
def test_action_without_its_permission_is_not_offered_and_does_nothing(
    staff_client, everything, action, changelist, needed
):
    view = f"view_{changelist.removesuffix('_changelist')}"
    other_perms = {"change_message", "add_dontsendentry", "add_message", "change_messagelog"} - set(needed)
    client = staff_client(view, *other_perms)
    assert action not in offered_actions(client, changelist)
    before, sent = state(), len(mail.outbox)
    response = post_action(client, action, everything[changelist], changelist)
    assert response.status_code in (200, 403)
    assert state() == before
    assert len(mail.outbox) == sent


@pytest.mark.parametrize(("action", "changelist", "needed"), ACTIONS)
def test_action_with_its_permission_is_offered_and_runs(staff_client, everything, action, changelist, needed):
    view = f"view_{changelist.removesuffix('_changelist')}"
    client = staff_client(view, *needed)
    assert action in offered_actions(client, changelist)
    before = state()
    response = post_action(client, action, everything[changelist], changelist)
    assert response.status_code == 200
    assert state() != before
