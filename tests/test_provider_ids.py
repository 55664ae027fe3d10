"""Provider ids in the log, and sending without adding a Message-ID (``MAILER_ADD_MESSAGE_ID = False``).

django-anymail's test backend stands for a provider: it reports an id for each message in
``anymail_status``, as anymail's real backends do.
"""

import pytest
from django.core import mail
from django.urls import reverse

from mailer.engine import send_all
from mailer.models import RESULT_SUCCESS, MessageLog
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

ANYMAIL_TEST_BACKEND = "anymail.backends.test.EmailBackend"


def test_the_log_keeps_the_providers_id_next_to_the_message_id(settings):
    settings.MAILER_EMAIL_BACKEND = ANYMAIL_TEST_BACKEND
    queue("first")
    queue("second")
    assert send_all().sent == 2

    logs = MessageLog.objects.filter(result=RESULT_SUCCESS).order_by("pk")
    # The test backend's id is the message's index in the outbox.
    assert [(log.subject, log.provider_message_id) for log in logs] == [("first", "0"), ("second", "1")]
    assert all(log.message_id == sent.extra_headers["Message-ID"] for log, sent in zip(logs, mail.outbox, strict=True))
    assert MessageLog.objects.get(provider_message_id="1").subject == "second"


def test_backends_without_provider_ids_leave_it_empty():
    queue("plain")
    send_all()
    assert MessageLog.objects.get().provider_message_id is None


def test_without_adding_a_message_id(settings):
    settings.MAILER_ADD_MESSAGE_ID = False
    settings.MAILER_EMAIL_BACKEND = ANYMAIL_TEST_BACKEND
    queue("no id")
    queue("own id", headers={"Message-ID": "<mine@example.org>"})
    assert send_all().sent == 2

    assert [sent.extra_headers.get("Message-ID") for sent in mail.outbox] == [None, "<mine@example.org>"]
    logged = {log.subject: (log.message_id, log.provider_message_id) for log in MessageLog.objects.all()}
    # The log records whatever id the message went out with.
    assert logged == {"no id": (None, "0"), "own id": ("<mine@example.org>", "1")}


def test_the_admin_finds_a_log_entry_by_its_provider_id(settings, admin_client):
    settings.MAILER_EMAIL_BACKEND = ANYMAIL_TEST_BACKEND
    queue("first")
    queue("second")
    send_all()
    # An id like a real provider's (the test backend's are 0, 1... which any Message-ID may contain).
    MessageLog.objects.filter(provider_message_id="1").update(provider_message_id="0102018c-esp-7f3a")
    response = admin_client.get(reverse("admin:mailer_messagelog_changelist"), {"q": "0102018c-esp-7f3a"})
    assert [log.subject for log in response.context["cl"].result_list] == ["second"]
    log = MessageLog.objects.get(provider_message_id="0102018c-esp-7f3a")
    page = admin_client.get(reverse("admin:mailer_messagelog_change", args=[log.pk])).content.decode()
    assert "Provider message id" in page
