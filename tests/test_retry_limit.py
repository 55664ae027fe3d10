"""The retry limit ("a deferred message stays deferred after MAILER_EMAIL_MAX_RETRIES retries") has one home:
``Message.objects.retryable()``, which ``retry_deferred()``, the ``retry_deferred`` command and the admin
action all use."""

import logging

import pytest
from django.core.management import call_command
from django.urls import reverse

from mailer.choices import Priority
from mailer.managers import MessageQuerySet
from mailer.models import Message

pytestmark = pytest.mark.django_db


def deferred(retry_count=0, mailer=None):
    return Message.objects.create(message_data="", priority=Priority.DEFERRED, retry_count=retry_count, mailer=mailer)


def retry_by_queryset(client):
    return Message.objects.retry_deferred()


def retry_by_command(client):
    call_command("retry_deferred")


def retry_by_admin(client):
    ids = [str(pk) for pk in Message.objects.values_list("pk", flat=True)]
    response = client.post(
        reverse("admin:mailer_message_changelist"), {"action": "retry_deferred", "_selected_action": ids}
    )
    assert response.status_code == 302


RETRY = [retry_by_queryset, retry_by_command, retry_by_admin]


def priorities():
    return dict(Message.objects.values_list("mailer", "priority"))


@pytest.mark.parametrize("retry", RETRY)
def test_every_way_of_retrying_asks_retryable(admin_client, monkeypatch, retry):
    # Change the rule in its one home and every way of retrying follows.
    monkeypatch.setattr(MessageQuerySet, "retryable", lambda self: self.deferred().filter(mailer="chosen"))
    deferred(mailer="chosen")
    deferred(mailer="other")
    retry(admin_client)
    assert priorities() == {"chosen": Priority.MEDIUM, "other": Priority.DEFERRED}


@pytest.mark.parametrize("retry", RETRY)
@pytest.mark.parametrize(("max_retries", "put_back"), [(None, {"0", "2", "5"}), (2, {"0"}), (0, set())])
def test_every_way_of_retrying_honours_max_retries(admin_client, settings, retry, max_retries, put_back):
    settings.MAILER_EMAIL_MAX_RETRIES = max_retries
    for count in (0, 2, 5):
        deferred(retry_count=count, mailer=str(count))
    retry(admin_client)
    assert {alias for alias, priority in priorities().items() if priority == Priority.MEDIUM} == put_back


@pytest.mark.parametrize(("max_retries", "retryable", "stay"), [(None, 3, 0), (2, 1, 2), (0, 0, 3)])
def test_retryable_and_retries_used_up_split_the_deferred(settings, max_retries, retryable, stay):
    settings.MAILER_EMAIL_MAX_RETRIES = max_retries
    for count in (0, 2, 5):
        deferred(retry_count=count)
    Message.objects.create(message_data="", priority=Priority.MEDIUM, retry_count=0)  # not deferred: neither
    assert Message.objects.retryable().count() == retryable
    assert Message.objects.retries_used_up().count() == stay


def test_command_and_admin_report_what_stays_deferred(admin_client, settings, caplog):
    settings.MAILER_EMAIL_MAX_RETRIES = 2
    for count in (0, 2, 5):
        deferred(retry_count=count)
    with caplog.at_level(logging.INFO, logger="mailer"):
        call_command("retry_deferred")
    assert "1 message(s) retried, 2 left deferred" in caplog.text
    Message.objects.update(priority=Priority.DEFERRED)  # retry counts now 1, 2, 5
    ids = [str(pk) for pk in Message.objects.values_list("pk", flat=True)]
    response = admin_client.post(
        reverse("admin:mailer_message_changelist"), {"action": "retry_deferred", "_selected_action": ids}, follow=True
    )
    assert [str(m) for m in response.context["messages"]] == [
        "1 deferred message put back on the queue.",
        "2 messages stay deferred: they reached MAILER_EMAIL_MAX_RETRIES.",
    ]
