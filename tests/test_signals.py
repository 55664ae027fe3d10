"""``mailer.signals``: one signal per batch, after its transaction commits, never breaking a send.

The relay is a real SMTP server on loopback (tests/support/relays.py) scripted to accept, refuse for good
(550) and refuse for now (451). Transactions are real (``transaction=True``): ``on_commit`` runs as in production.
"""

import importlib
import logging

import django
import pytest
from django.core import mail
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

import mailer
from mailer import notify, signals
from mailer.backend import DbBackend
from mailer.engine import send_all
from mailer.heartbeats import Heartbeat
from mailer.management.commands.runmailer import Command as RunMailer
from mailer.models import PRIORITY_HIGH, RESULT_FAILURE, RESULT_SUCCESS, Message, MessageLog
from tests.support import backends
from tests.support.queueing import block
from tests.support.relays import ScriptedRelay, send_through
from tests.support.services import unavailable

pytestmark = pytest.mark.django_db(transaction=True)

SENDER = "from@example.com"
NAMES = ("queued", "sent", "deferred", "failed", "skipped")
REFUSALS = {"bob@example.com": "550 5.1.1 <bob@example.com>: no such user", "cat@example.com": "451 4.3.0 try later"}


class Received:
    """Every signal of mailer.signals received: ``calls`` is [(name, [MessageEvent, ...]), ...] in order."""

    def __init__(self):
        self.calls = []
        self.hooks = []  # callables run by each receiver, after recording (to raise, query, stop...)

    def receiver(self, name):
        def receive(sender, messages, **kwargs):
            assert sender is Message
            self.calls.append((name, list(messages)))
            for hook in self.hooks:
                hook(name, messages)

        receive.__name__ = f"receive_{name}"
        return receive

    def of(self, name):
        return [events for called, events in self.calls if called == name]


@pytest.fixture
def received():
    record = Received()
    receivers = [(signals.__dict__[f"messages_{name}"], record.receiver(name)) for name in NAMES]
    for signal, receiver in receivers:
        signal.connect(receiver, sender=Message, weak=False)
    yield record
    for signal, receiver in receivers:
        signal.disconnect(receiver, sender=Message)


@pytest.fixture
def relay(settings):
    settings.MAILER_COMMIT_INTERVAL = 600  # one batch, however slow a busy machine makes the first messages
    with ScriptedRelay(refuse=REFUSALS) as relay:
        send_through(settings, relay)
        yield relay


def message_id_of(email_message):
    return email_message.extra_headers["Message-ID"]


def test_a_batch_sends_one_signal_per_outcome_with_an_event_per_message(relay, received):
    for n in range(3):
        mailer.send_mail(f"hello {n}", "body", SENDER, [f"ann{n}@example.com"], priority=PRIORITY_HIGH)
    mailer.send_mail("to bob", "body", SENDER, ["bob@example.com"])
    mailer.send_mail("to cat", "body", SENDER, ["cat@example.com"])
    queued_ids = {row.email.subject: message_id_of(row.email) for row in Message.objects.all()}
    waiting, bob = Message.objects.get(subject_text="to cat"), Message.objects.get(subject_text="to bob")
    received.calls.clear()

    result = send_all()

    assert (result.sent, result.deferred, result.failed) == (3, 1, 1)
    assert sorted(name for name, _events in received.calls) == ["deferred", "failed", "sent"]
    [sent] = received.of("sent")
    assert [(e.subject, e.recipients, e.priority) for e in sent] == [
        (f"hello {n}", (f"ann{n}@example.com",), PRIORITY_HIGH) for n in range(3)
    ]
    assert [e.message_id for e in sent] == [queued_ids[f"hello {n}"] for n in range(3)]
    assert {e.message_id for e in sent} == set(
        MessageLog.objects.filter(result=RESULT_SUCCESS).values_list("message_id", flat=True)
    )
    assert all(e.pk is not None and e.error == "" and e.next_attempt is None for e in sent)
    [[failed]] = received.of("failed")
    assert (failed.pk, failed.recipients, failed.subject) == (bob.pk, ("bob@example.com",), "to bob")
    assert failed.message_id == queued_ids["to bob"]
    assert "550 5.1.1 <bob@example.com>: no such user" in failed.error and failed.next_attempt is None
    [[deferred]] = received.of("deferred")
    assert (deferred.pk, deferred.recipients, deferred.subject) == (waiting.pk, ("cat@example.com",), "to cat")
    assert "451 4.3.0 try later" in deferred.error
    assert deferred.next_attempt is not None
    assert deferred.next_attempt == Message.objects.get(pk=waiting.pk).not_before


def test_a_message_partly_refused_is_sent_to_some_deferred_for_one_failed_for_another(relay, received):
    mailer.send_mail("three", "body", SENDER, ["ann@example.com", "bob@example.com", "cat@example.com"])
    send_all()

    [[sent]], [[failed]], [[deferred]] = received.of("sent"), received.of("failed"), received.of("deferred")
    assert sent.recipients == ("ann@example.com",)
    assert failed.recipients == ("bob@example.com",) and "550" in failed.error
    assert deferred.recipients == ("cat@example.com",) and deferred.next_attempt is not None
    assert sent.message_id == failed.message_id == deferred.message_id
    assert relay.received() == ["ann@example.com"]


def test_each_queueing_call_sends_one_queued_signal(settings, received):
    settings.ADMINS = [("Admin", "admin@example.com")]
    settings.MANAGERS = [("Manager", "manager@example.com")]
    later = timezone.now() + timezone.timedelta(hours=1)
    mailer.send_mail("one", "body", SENDER, ["a@example.com"], send_at=later)
    mailer.send_html_mail("html", "body", "<p>body</p>", SENDER, ["b@example.com", "C@Example.com"])
    mailer.send_mass_mail([("m1", "b", SENDER, ["d@example.com"]), ("m2", "b", SENDER, ["e@example.com"])])
    mailer.mail_admins("admins", "body")
    mailer.mail_managers("managers", "body")
    backend = DbBackend()
    batch = [mail.EmailMessage(f"backend {n}", "body", SENDER, [f"f{n}@example.com"]) for n in range(3)]
    assert backend.send_messages(batch) == 3

    queued = received.of("queued")
    assert [[e.subject for e in events] for events in queued] == [
        ["one"],
        ["html"],
        ["m1", "m2"],
        [f"{settings.EMAIL_SUBJECT_PREFIX}admins"],
        [f"{settings.EMAIL_SUBJECT_PREFIX}managers"],
        ["backend 0", "backend 1", "backend 2"],
    ]
    [one], [html] = queued[0], queued[1]
    assert one.next_attempt == later and one.pk is None
    assert html.recipients == ("b@example.com", "c@example.com")
    stored = {message_id_of(row.email) for row in Message.objects.all()}
    assert {e.message_id for events in queued for e in events} == stored
    assert len(stored) == 9


def test_mail_to_a_blocked_address_is_skipped_when_queued_and_when_sent(relay, received):
    block("gone@example.com")
    mailer.send_mail("never queued", "body", SENDER, ["gone@example.com"])
    assert received.of("queued") == []
    [[at_queueing]] = received.of("skipped")
    assert at_queueing.pk is None
    assert (at_queueing.recipients, at_queueing.subject) == (("gone@example.com",), "never queued")

    mailer.send_mail("queued first", "body", SENDER, ["later@example.com"])
    row = Message.objects.get()
    block("later@example.com")
    send_all()
    assert len(received.of("skipped")) == 2
    [at_sending] = received.of("skipped")[1]
    assert at_sending.pk == row.pk
    assert (at_sending.recipients, at_sending.subject) == (("later@example.com",), "queued first")
    assert received.of("sent") == []


def test_a_receiver_that_raises_is_logged_and_breaks_nothing(relay, received, caplog):
    def boom(sender, messages, **kwargs):
        raise RuntimeError("receiver is broken")

    signals.messages_sent.connect(boom, sender=Message, weak=False)
    signals.messages_queued.connect(boom, sender=Message, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="mailer"):
            mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
            result = send_all()
    finally:
        signals.messages_sent.disconnect(boom, sender=Message)
        signals.messages_queued.disconnect(boom, sender=Message)

    assert result.sent == 1 and relay.received() == ["ann@example.com"]
    assert not Message.objects.exists()
    assert MessageLog.objects.filter(result=RESULT_SUCCESS).count() == 1
    assert len(received.of("sent")) == 1 and len(received.of("queued")) == 1  # the other receivers got them
    records = [r for r in caplog.records if r.name == "mailer.signals"]
    assert [r.getMessage().split(" (")[0] for r in records] == [
        "a receiver of the messages_queued signal",
        "a receiver of the messages_sent signal",
    ]
    assert all(r.exc_info[1].args == ("receiver is broken",) for r in records)


def test_signals_arrive_after_the_outcome_is_committed(relay, received):
    seen = {}

    def look(name, messages):  # runs in the receiver: what another connection would read now
        if name == "sent":
            seen["queued"] = Message.objects.filter(pk__in=[e.pk for e in messages]).count()
            seen["logged"] = MessageLog.objects.filter(message_id__in=[e.message_id for e in messages]).count()
            seen["in_transaction"] = transaction.get_connection().in_atomic_block
        if name == "deferred":
            seen["not_before"] = Message.objects.get(pk=messages[0].pk).not_before
        if name == "failed":
            failures = MessageLog.objects.filter(result=RESULT_FAILURE)
            seen["failure"] = failures.filter(message_id=messages[0].message_id).count()

    received.hooks.append(look)
    for n in range(2):
        mailer.send_mail(f"m{n}", "body", SENDER, [f"ann{n}@example.com"])
    mailer.send_mail("bob", "body", SENDER, ["bob@example.com"])
    mailer.send_mail("cat", "body", SENDER, ["cat@example.com"])
    send_all()

    assert seen["queued"] == 0 and seen["logged"] == 2 and seen["in_transaction"] is False
    assert seen["not_before"] is not None and seen["failure"] == 1


def test_in_an_outer_transaction_signals_wait_for_its_commit(relay, received):
    with transaction.atomic():
        mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
        assert received.calls == []
        send_all()
        assert received.calls == []
    assert [name for name, _events in received.calls] == ["queued", "sent"]


def test_nothing_is_sent_for_a_rolled_back_transaction(relay, received):
    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
        raise Undo
    mailer.send_mail("kept", "body", SENDER, ["ann@example.com"])
    with pytest.raises(Undo), transaction.atomic():
        send_all()
        raise Undo
    assert [[e.subject for e in events] for name, events in received.calls] == [["kept"]]
    assert Message.objects.count() == 1  # the pass was rolled back with the transaction


@override_settings(MAILER_COMMIT_BATCH_SIZE=2)
def test_one_signal_per_committed_batch(relay, received):
    mailer.send_mass_mail([(f"m{n}", "body", SENDER, [f"a{n}@example.com"]) for n in range(5)])
    send_all()
    assert [len(events) for events in received.of("sent")] == [2, 2, 1]


def test_without_a_receiver_nothing_is_built(relay):
    assert notify.Events.if_listened() is None
    mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
    assert send_all().sent == 1


def test_only_the_signals_with_a_receiver_get_events(relay):
    got = []

    def on_failed(sender, messages, **kwargs):
        got.append(messages)

    signals.messages_failed.connect(on_failed, sender=Message, weak=False)
    try:
        events = notify.Events.if_listened()
        assert events is not None and events.wanted == {"failed"}
        mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
        mailer.send_mail("bob", "body", SENDER, ["bob@example.com"])
        send_all()
    finally:
        signals.messages_failed.disconnect(on_failed, sender=Message)
    assert [[e.subject for e in messages] for messages in got] == [["bob"]]


# --- Every way mail leaves -------------------------------------------------------------------------------------


def test_the_send_mail_command(relay, received):
    mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
    call_command("send_mail", verbosity=0)
    assert [[e.subject for e in events] for events in received.of("sent")] == [["hello"]]


def test_runmailer_loop(relay, received):
    passes = []
    command = RunMailer()
    command.heartbeat = Heartbeat("runmailer")  # what the command's handle() makes before its sender
    sender = command.make_sender(lambda result: (passes.append(result), sender.stop()), None)
    mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
    assert sender.run() == 0  # stopped after its first pass
    assert [result.sent for result in passes] == [1]
    assert [[e.subject for e in events] for events in received.of("sent")] == [["hello"]]


def test_the_admin_send_action(relay, received, admin_client):
    mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
    pk = Message.objects.get().pk
    url = reverse("admin:mailer_message_changelist")
    admin_client.post(url, {"action": "send_messages", "_selected_action": [str(pk)], "index": 0})
    assert [[e.pk for e in events] for events in received.of("sent")] == [[pk]]


def test_retry_deferred_sends_no_signal(relay, received, settings):
    settings.MAILER_DEFER_PERMANENT_FAILURES = True
    mailer.send_mail("bob", "body", SENDER, ["bob@example.com"])
    send_all()
    [[deferred]] = received.of("deferred")  # set aside for retry_deferred: no next attempt of its own
    assert deferred.next_attempt is None and "550" in deferred.error
    received.calls.clear()
    call_command("retry_deferred", verbosity=0)
    assert received.calls == []


def test_the_tasks_path(relay, received, settings):
    module = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    try:
        importlib.import_module(module)
    except ImportError as exc:
        unavailable(f"{module} cannot be imported ({exc}); pip install -e '.[test]'")
    settings.TASKS = {"default": {"BACKEND": f"{module}.backends.immediate.ImmediateBackend"}}
    from mailer.tasks import send_queued_mail

    mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
    send_queued_mail.enqueue()  # the immediate backend runs it now, as a worker would
    assert [[e.subject for e in events] for events in received.of("sent")] == [["hello"]]


# --- Outcomes other than a relay's reply ----------------------------------------------------------------------


def test_a_poison_message_is_reported_failed_though_the_pass_stops(failures, received):
    failures["poison"] = ValueError("no idea what this is")
    mailer.send_mail("poison", "body", SENDER, ["ann@example.com"])
    with pytest.raises(ValueError):
        send_all()
    [[failed]] = received.of("failed")
    assert failed.subject == "poison" and failed.error == "ValueError: no idea what this is"
    assert Message.objects.get().pk == failed.pk  # set aside, waiting for retry_deferred


def test_an_error_handler_that_says_deferred(failures, received, settings):
    settings.MAILER_ERROR_HANDLER = f"{backends.HERE}.handler_says_deferred"
    failures["odd"] = RuntimeError("odd")
    mailer.send_mail("odd", "body", SENDER, ["ann@example.com"])
    send_all()
    [[deferred]] = received.of("deferred")
    assert (deferred.subject, deferred.recipients, deferred.error) == ("odd", ("ann@example.com",), "")
    assert deferred.message_id == message_id_of(Message.objects.get().email)


def test_an_expired_message_is_reported_failed(relay, received):
    mailer.send_mail("too late", "body", SENDER, ["ann@example.com"])
    Message.objects.update(expires_at=timezone.now() - timezone.timedelta(minutes=1))
    send_all()
    [[failed]] = received.of("failed")
    assert failed.subject == "too late" and failed.error.startswith("expired:")
    assert relay.received() == []


def test_with_the_staging_switch_events_name_the_messages_own_recipients(relay, received, settings):
    settings.MAILER_REDIRECT_TO = ["qa@example.com"]
    mailer.send_mail("hello", "body", SENDER, ["ann@example.com"])
    send_all()
    assert relay.received() == ["qa@example.com"]
    [[sent]] = received.of("sent")
    assert sent.recipients == ("ann@example.com",)
