"""Django 6.1's ``MAILERS``: the queue as a mailer alias, real mailers named by alias, one queue per relay.

Django's test runner replaces every ``MAILERS`` entry with locmem; these tests set ``MAILERS`` themselves,
after that. ``tests/test_mailers_project.py`` runs the same configuration in a real ``manage.py``.
"""

import django
import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from mailer import engine
from mailer.checks import check_delivery
from mailer.models import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MEDIUM, RESULT_SUCCESS, Message, MessageLog

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is new in Django 6.1"),
]

QUEUE = "mailer.backend.DbBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"


def relay(server):
    return {"BACKEND": SMTP, "OPTIONS": {"host": server.host, "port": server.port, "use_tls": False}}


@pytest.fixture
def two_relays(settings, smtp_server, second_smtp_server):
    """A transactional relay behind "default" and a bulk relay behind "bulk", each with its own queue alias."""
    settings.MAILERS = {
        "default": {"BACKEND": QUEUE, "OPTIONS": {"deliver_using": "transactional"}},
        "bulk": {"BACKEND": QUEUE, "OPTIONS": {"deliver_using": "bulk-relay", "priority": PRIORITY_LOW}},
        "transactional": relay(smtp_server),
        "bulk-relay": relay(second_smtp_server),
    }
    del settings.MAILER_EMAIL_BACKEND
    return smtp_server, second_smtp_server


def subjects(server):
    return sorted(m.message["Subject"] for m in server.messages)


def test_django_send_mail_queues_through_the_default_alias(two_relays):
    transactional, bulk = two_relays
    assert mail.send_mail("Welcome", "Hi", "f@example.org", ["a@example.org"]) == 1
    message = Message.objects.get()
    assert (message.mailer, message.priority, message.email.subject) == ("default", PRIORITY_MEDIUM, "Welcome")
    assert transactional.messages == [] and bulk.messages == []  # queued, not sent

    assert engine.send_all().sent == 1
    assert subjects(transactional) == ["Welcome"] and bulk.messages == []


def test_each_queue_alias_is_delivered_by_its_own_mailer(two_relays):
    transactional, bulk = two_relays
    mail.send_mail("Receipt", "R", "f@example.org", ["a@example.org"])
    mail.send_mail("Newsletter", "N", "f@example.org", ["b@example.org"], using="bulk")
    EmailMessage("Digest", "D", "f@example.org", ["c@example.org"]).send(using="bulk")
    mail.mail_admins("Broken", "B", using="default")  # settings.ADMINS is empty: nothing queued

    queued = {m.email.subject: (m.mailer, m.priority) for m in Message.objects.all()}
    assert queued == {
        "Receipt": ("default", PRIORITY_MEDIUM),
        "Newsletter": ("bulk", PRIORITY_LOW),
        "Digest": ("bulk", PRIORITY_LOW),
    }

    result = engine.send_all()
    assert result.sent == 3
    assert subjects(transactional) == ["Receipt"]
    assert subjects(bulk) == ["Digest", "Newsletter"]
    # One connection per relay for the whole pass.
    assert (transactional.connections, bulk.connections) == (1, 1)
    logged = {log.subject: (log.mailer, log.result) for log in MessageLog.objects.all()}
    assert logged == {
        "Receipt": ("default", RESULT_SUCCESS),
        "Newsletter": ("bulk", RESULT_SUCCESS),
        "Digest": ("bulk", RESULT_SUCCESS),
    }


def test_mail_admins_with_plain_addresses_through_an_alias(two_relays, settings):
    transactional, _bulk = two_relays
    settings.ADMINS = ["ops@example.org"]
    mail.mail_admins("Broken", "B", using="bulk")
    assert Message.objects.get().mailer == "bulk"
    engine.send_all()
    assert two_relays[1].messages[0].rcpt_tos == ["ops@example.org"]
    assert transactional.messages == []


def test_mailer_send_mail_and_legacy_rows_go_the_way_of_default(two_relays):
    import mailer

    transactional, bulk = two_relays
    mailer.send_mail("API", "B", "f@example.org", ["a@example.org"], priority=PRIORITY_HIGH)
    assert Message.objects.get().mailer is None
    engine.send_all()
    assert subjects(transactional) == ["API"] and bulk.messages == []


def test_an_alias_removed_from_mailers_goes_the_way_of_default(two_relays, settings):
    transactional, bulk = two_relays
    mail.send_mail("Old", "B", "f@example.org", ["a@example.org"], using="bulk")
    settings.MAILERS = {name: entry for name, entry in settings.MAILERS.items() if name != "bulk"}
    engine.send_all()
    assert subjects(transactional) == ["Old"] and bulk.messages == []


def test_an_alias_that_no_longer_queues_sends_its_leftovers_itself(two_relays, settings):
    transactional, bulk = two_relays
    mail.send_mail("Left over", "B", "f@example.org", ["a@example.org"], using="bulk")
    settings.MAILERS = {**settings.MAILERS, "bulk": relay(bulk)}
    engine.send_all()
    assert subjects(bulk) == ["Left over"] and transactional.messages == []


def test_mailer_deliver_using_setting_is_the_default_route(settings, smtp_server):
    settings.MAILERS = {"default": {"BACKEND": QUEUE}, "smtp": relay(smtp_server)}
    settings.MAILER_DELIVER_USING = "smtp"
    del settings.MAILER_EMAIL_BACKEND
    mail.send_mail("S", "B", "f@example.org", ["a@example.org"])
    engine.send_all()
    assert subjects(smtp_server) == ["S"]
    assert check_delivery() == []


def test_mailer_email_backend_still_names_the_real_sender_with_mailers(settings):
    settings.MAILERS = {"default": {"BACKEND": QUEUE}}
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.send_mail("S", "B", "f@example.org", ["a@example.org"])
    engine.send_all()
    assert [m.subject for m in mail.outbox] == ["S"]
    # It works, but the check suggests the MAILERS way.
    assert check_ids() == ["mailer.W002"]


def test_unknown_options_get_djangos_own_error(settings):
    settings.MAILERS = {"default": {"BACKEND": QUEUE, "OPTIONS": {"deliver_usin": "smtp"}}}
    with pytest.raises(mail.InvalidMailer, match="deliver_usin"):
        mail.send_mail("S", "B", "f@example.org", ["a@example.org"])
    assert Message.objects.count() == 0


def test_fail_silently_as_an_option(settings):
    settings.MAILERS = {"default": {"BACKEND": QUEUE, "OPTIONS": {"fail_silently": True}}}
    assert mail.send_mail("Bad\nsubject", "B", "f@example.org", ["a@example.org"]) == 0
    assert Message.objects.count() == 0


def test_the_backend_knows_its_alias_and_options(settings):
    settings.MAILERS = {"bulk": {"BACKEND": QUEUE, "OPTIONS": {"deliver_using": "x", "priority": PRIORITY_LOW}}}
    backend = mail.mailers["bulk"]
    assert (backend.alias, backend.deliver_using, backend.priority, backend.fail_silently) == (
        "bulk",
        "x",
        PRIORITY_LOW,
        False,
    )


# What a run refuses, and what ``manage.py check`` says about it.


def check_ids():
    return sorted(message.id for message in check_delivery())


@pytest.mark.parametrize(
    "mailers, extra, error",
    [
        ({"default": {"BACKEND": QUEUE, "OPTIONS": {"deliver_using": "nowhere"}}}, {}, "does not exist"),
        (
            {"default": {"BACKEND": QUEUE, "OPTIONS": {"deliver_using": "bulk"}}, "bulk": {"BACKEND": QUEUE}},
            {},
            "puts mail back on the queue",
        ),
        ({"default": {"BACKEND": QUEUE}}, {"MAILER_DELIVER_USING": "default"}, "puts mail back on the queue"),
        ({"default": {"BACKEND": QUEUE}}, {}, "No mailer sends the mail queued through MAILERS['default']"),
    ],
    ids=["missing-alias", "alias-loop", "setting-loop", "no-route"],
)
def test_a_configuration_that_cannot_send_is_refused_and_reported(settings, mailers, extra, error):
    settings.MAILERS = mailers
    del settings.MAILER_EMAIL_BACKEND
    for name, value in extra.items():
        setattr(settings, name, value)
    mail.send_mail("S", "B", "f@example.org", ["a@example.org"])

    with pytest.raises(ImproperlyConfigured, match=error.replace("[", r"\[")):
        engine.send_all()
    assert Message.objects.count() == 1  # nothing lost, nothing logged
    assert MessageLog.objects.count() == 0
    assert set(check_ids()) == {"mailer.E001"}
    assert any(error in message.msg for message in check_delivery())


def test_check_smtp_backend_by_path_with_mailers(settings):
    settings.MAILERS = {"default": {"BACKEND": QUEUE}}
    settings.MAILER_EMAIL_BACKEND = SMTP
    assert check_ids() == ["mailer.E003"]


def test_check_bad_priority_option(settings):
    settings.MAILERS = {"default": {"BACKEND": QUEUE, "OPTIONS": {"deliver_using": "r", "priority": "low"}}}
    settings.MAILERS["r"] = {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
    assert check_ids() == ["mailer.E004"]


def test_check_both_settings_name_a_sender(settings):
    settings.MAILERS = {
        "default": {"BACKEND": QUEUE},
        "r": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
    }
    settings.MAILER_DELIVER_USING = "r"
    assert check_ids() == ["mailer.W001"]
