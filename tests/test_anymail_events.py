"""ESP events reach the don't-send list through ``mailer.contrib.anymail`` (installed in the tests' settings).

The events are real webhook calls of Postmark and Mailgun, posted to django-anymail's own webhook views with
their credentials, so anymail parses them and sends its ``tracking`` signal as it does in production; one test
sends the signal itself, with ``AnymailTrackingEvent`` instances, as any other ESP's view does.
"""

import datetime

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from mailer import bounces
from mailer.engine import send_all
from mailer.models import DontSendEntry, MessageLog, SoftBounce
from tests.support.esp_webhooks import (
    mailgun_event,
    post_mailgun,
    post_postmark,
    postmark_bounce,
    postmark_delivery,
    postmark_unsubscribe,
    webhook_settings,
)
from tests.support.queueing import block, queue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _webhooks(settings):
    webhook_settings(settings)


def entries():
    return sorted(DontSendEntry.objects.values_list("to_address", "reason", "esp_name"))


def test_a_hard_bounce_adds_the_recipient_once_whatever_its_case(client):
    payload = postmark_bounce("Ann@Example.ORG", message_id="883953f4-6105-42a2-a16a-77a8eac79483")
    assert post_postmark(client, payload).status_code == 200
    assert post_postmark(client, payload).status_code == 200  # the ESP sends the same event again
    assert post_postmark(client, postmark_bounce("ann@example.org")).status_code == 200  # another bounce
    assert post_postmark(client, postmark_bounce("ANN@EXAMPLE.ORG")).status_code == 200
    assert entries() == [("ann@example.org", "bounced", "Postmark")]

    entry = DontSendEntry.objects.get()
    assert entry.event_id == str(payload["ID"])
    assert entry.event_at.replace(microsecond=0) == datetime.datetime(2026, 11, 30, 16, 33, 54, tzinfo=datetime.UTC)
    assert entry.provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"
    assert "550 5.1.1" in entry.detail and "unknown user" in entry.detail
    assert entry.address_digest


def test_a_complaint_and_an_unsubscribe_add_the_recipient(client):
    post_postmark(client, postmark_bounce("bob@example.org", kind="SpamComplaint"))
    post_postmark(client, postmark_unsubscribe("Cy@example.org"))
    post_mailgun(client, mailgun_event("dee@example.org", "complained"))
    post_mailgun(client, mailgun_event("eve@example.org", "unsubscribed"))
    post_mailgun(client, mailgun_event("Fay@example.org", "failed", severity="permanent"))
    assert entries() == [
        ("bob@example.org", "complained", "Postmark"),
        ("cy@example.org", "unsubscribed", "Postmark"),
        ("dee@example.org", "complained", "Mailgun"),
        ("eve@example.org", "unsubscribed", "Mailgun"),
        ("fay@example.org", "bounced", "Mailgun"),
    ]


def test_soft_bounces_and_deliveries_add_nothing_by_default(client):
    post_postmark(client, postmark_bounce("ann@example.org", kind="Transient"))
    post_postmark(client, postmark_delivery("ann@example.org"))
    for _ in range(5):
        post_mailgun(client, mailgun_event("bob@example.org", "failed", severity="temporary"))
    post_mailgun(client, mailgun_event("bob@example.org", "delivered"))
    assert DontSendEntry.objects.count() == 0
    assert SoftBounce.objects.count() == 0  # nothing is counted either


def test_a_forged_webhook_adds_nothing(client):
    assert post_postmark(client, postmark_bounce("ann@example.org"), secret="hooks:guessed").status_code == 400
    assert post_mailgun(client, mailgun_event("bob@example.org", "complained"), key="guessed").status_code == 400
    assert DontSendEntry.objects.count() == 0


def test_an_address_already_on_the_list_keeps_its_entry(client):
    block("Ann@example.org")  # by hand
    post_postmark(client, postmark_bounce("ann@example.org"))
    assert entries() == [("ann@example.org", None, None)]


def test_mail_to_those_addresses_is_not_delivered_afterwards(client, smtp_settings):
    queue("queued before the bounce", to=["ann@example.org", "ok@example.org"])
    post_postmark(client, postmark_bounce("ANN@example.org"))
    post_mailgun(client, mailgun_event("bob@example.org", "complained"))
    post_postmark(client, postmark_unsubscribe("cy@example.org"))
    post_mailgun(client, mailgun_event("dee@example.org", "failed", severity="temporary"))
    queue("queued after", to=["Ann <ann@EXAMPLE.org>", "bob@example.org", "dee@example.org"])
    queue("only listed", to=["cy@example.org", "Bob@example.org"])

    result = send_all()
    received = smtp_settings.wait_for(2)
    assert sorted(rcpt for message in received for rcpt in message.rcpt_tos) == ["dee@example.org", "ok@example.org"]
    assert result.sent == 2
    # The message left with no recipient is logged as "don't send".
    assert MessageLog.objects.filter(result="2").count() == 1


def test_the_signal_itself_with_anymails_event_classes():
    """What any ESP's webhook view does: send ``tracking`` with an ``AnymailTrackingEvent``."""
    at = timezone.now() - datetime.timedelta(minutes=3)
    for event_type, address in [
        ("bounced", "a@example.org"),
        ("complained", "B@example.org"),
        ("unsubscribed", "c@example.org"),
        ("deferred", "d@example.org"),
        ("delivered", "e@example.org"),
        ("opened", "f@example.org"),
        ("rejected", "g@example.org"),
        ("bounced", None),  # no recipient: nothing to add
    ]:
        event = AnymailTrackingEvent(
            event_type=event_type, timestamp=at, event_id=f"ev-{address}", recipient=address, message_id="0102-ses"
        )
        tracking.send(sender=object, event=event, esp_name="Amazon SES")
    assert entries() == [
        ("a@example.org", "bounced", "Amazon SES"),
        ("b@example.org", "complained", "Amazon SES"),
        ("c@example.org", "unsubscribed", "Amazon SES"),
    ]
    assert DontSendEntry.objects.get(to_address="a@example.org").event_at == at


def test_the_entry_leads_to_the_log_row_of_the_bounced_message(client, settings):
    settings.MAILER_EMAIL_BACKEND = "anymail.backends.test.EmailBackend"  # reports an id for each message
    queue("first", to=["ann@example.org"])
    queue("second", to=["bob@example.org"])
    assert send_all().sent == 2
    log = MessageLog.objects.get(provider_message_id="1")
    post_postmark(client, postmark_bounce("bob@example.org", message_id="1"))
    entry = DontSendEntry.objects.get()
    assert bounces.message_log(entry) == log

    # One id per recipient, logged together: the row is found by either.
    log.provider_message_id = "a1b2, c3d4"
    log.save()
    for wanted in ("a1b2", "c3d4"):
        entry.provider_message_id = wanted
        assert bounces.message_log(entry) == log
    entry.provider_message_id = "c3"  # a part of an id is not the id
    assert bounces.message_log(entry) is None

    # Purging the log keeps the entry, and the id the ESP knows the message by.
    entry.provider_message_id = "a1b2"
    entry.save()
    MessageLog.objects.purge_old_entries(days=-1)
    entry.refresh_from_db()
    assert (entry.provider_message_id, bounces.message_log(entry)) == ("a1b2", None)
    assert len(mail.outbox) == 2


def test_the_admin_shows_why_and_links_to_the_log(client, admin_client, settings):
    settings.MAILER_EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    queue("first", to=["ann@example.org"])
    send_all()
    log = MessageLog.objects.get()
    post_postmark(client, postmark_bounce("ann@example.org", message_id=log.provider_message_id))
    post_mailgun(client, mailgun_event("bob@example.org", "complained"))
    block("cy@example.org")

    changelist = reverse("admin:mailer_dontsendentry_changelist")
    page = admin_client.get(changelist).content.decode()
    assert "hard bounce" in page and "complaint" in page and "Postmark" in page
    filtered = admin_client.get(changelist, {"reason__exact": "bounced"})
    assert [e.to_address for e in filtered.context["cl"].result_list] == ["ann@example.org"]

    entry = DontSendEntry.objects.get(to_address="ann@example.org")
    page = admin_client.get(reverse("admin:mailer_dontsendentry_change", args=[entry.pk])).content.decode()
    assert reverse("admin:mailer_messagelog_change", args=[log.pk]) in page
    assert "550 5.1.1" in page


@pytest.mark.django_db(transaction=True)  # soft bounces are counted once committed
class TestSoftBounceLimit:
    @pytest.fixture(autouse=True)
    def _limit(self, settings):
        settings.MAILER_SOFT_BOUNCE_LIMIT = (3, 7)

    def test_the_nth_soft_bounce_within_the_window_adds_the_address(self, client):
        post_mailgun(client, mailgun_event("Ann@example.org", "failed", severity="temporary"))
        post_postmark(client, postmark_bounce("ann@example.org", kind="Transient"))
        assert DontSendEntry.objects.count() == 0
        assert SoftBounce.objects.filter(address="ann@example.org").count() == 2
        post_mailgun(client, mailgun_event("ANN@example.org", "failed", severity="temporary"))
        assert entries() == [("ann@example.org", "soft_bounces", "Mailgun")]
        assert DontSendEntry.objects.get().detail.startswith("3 soft bounces within 7 days; the last: ")
        assert SoftBounce.objects.count() == 0  # counted and forgotten

    def test_old_soft_bounces_do_not_count(self, client):
        long_ago = (timezone.now() - datetime.timedelta(days=8)).timestamp()
        for _ in range(2):
            post_mailgun(client, mailgun_event("ann@example.org", "failed", severity="temporary", at=long_ago))
        post_mailgun(client, mailgun_event("ann@example.org", "failed", severity="temporary"))
        assert DontSendEntry.objects.count() == 0
        assert SoftBounce.objects.count() == 1

    def test_the_same_event_sent_again_counts_once(self, client):
        payload = postmark_bounce("ann@example.org", kind="Transient")
        for _ in range(3):
            post_postmark(client, payload)
        assert DontSendEntry.objects.count() == 0
        assert SoftBounce.objects.count() == 1

    def test_addresses_count_apart(self, client):
        for address in ("ann@example.org", "bob@example.org", "ann@example.org", "bob@example.org"):
            post_mailgun(client, mailgun_event(address, "failed", severity="temporary"))
        assert DontSendEntry.objects.count() == 0
        post_mailgun(client, mailgun_event("bob@example.org", "failed", severity="temporary"))
        assert entries() == [("bob@example.org", "soft_bounces", "Mailgun")]


def test_an_entry_given_another_address_no_longer_holds_the_first(client):
    post_postmark(client, postmark_bounce("ann@example.org"))
    entry = DontSendEntry.objects.get()
    entry.to_address = "Ann.Smith@example.org"  # corrected by hand
    entry.save()
    post_postmark(client, postmark_bounce("ann@example.org"))
    assert sorted(DontSendEntry.objects.values_list("to_address", flat=True)) == [
        "ann.smith@example.org",
        "ann@example.org",
    ]


def test_add_once_from_a_projects_own_code():
    assert DontSendEntry.objects.add_once("Ann <Ann@Example.org>", reason="unsubscribed")
    assert not DontSendEntry.objects.add_once("ann@example.org", reason="bounced")
    assert entries() == [("ann@example.org", "unsubscribed", None)]
    with pytest.raises(ValueError, match="Not an email address"):
        DontSendEntry.objects.add_once("nobody")
