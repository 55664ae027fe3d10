"""The admin pages of the queue, the log and the don't-send list, through the test client."""

import re
import smtplib

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from mailer.engine import send_all
from mailer.models import (
    PRIORITY_DEFERRED,
    PRIORITY_HIGH,
    PRIORITY_MEDIUM,
    RESULT_FAILURE,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
    make_message,
)
from tests import test_engine

pytestmark = pytest.mark.django_db


def queue(subject, to="to@example.com", priority=PRIORITY_MEDIUM, headers=None):
    message = make_message(
        subject=subject, body=f"plain body of {subject}", from_email="from@example.com", to=[to], priority=priority
    )
    if headers:
        email = message.email
        email.extra_headers.update(headers)
        message.email = email
    message.save()
    return message


def url(name, *args):
    return reverse(f"admin:mailer_{name}", args=args)


@pytest.fixture
def queued():
    return [
        queue("first subject", "ann@example.com", PRIORITY_HIGH),
        queue("second subject", "bob@example.com"),
        queue("third subject", "cat@example.com"),
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
def logs(queued, settings):
    """Send two, fail one: two success rows and one failure row."""
    settings.MAILER_EMAIL_BACKEND = "tests.test_engine.FailingBackend"
    test_engine.FAILURES["third subject"] = smtplib.SMTPRecipientsRefused({"cat@example.com": (550, b"no")})
    try:
        send_all()
    finally:
        test_engine.FAILURES.clear()
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


def test_messagelog_search_by_message_id(admin_client, logs):
    second = next(log for log in logs if log.subject == "second subject")
    assert second.message_id
    response = admin_client.get(url("messagelog_changelist"), {"q": second.message_id.strip("<>")})
    assert response.status_code == 200
    page = response.content.decode()
    assert "second subject" in page
    assert "first subject" not in page and "third subject" not in page
    assert response.context["cl"].result_count == 1


def test_the_mailers_alias_is_shown_and_filters_the_queue_and_the_log(admin_client, queued):
    Message.objects.filter(pk=queued[0].pk).update(mailer="bulk")
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


def run_action(client, ids):
    return client.post(
        url("message_changelist"),
        {"action": "send_messages", "_selected_action": [str(pk) for pk in ids], "index": 0},
        follow=True,
    )


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
