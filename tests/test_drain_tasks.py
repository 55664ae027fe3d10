"""Continuous draining on Django's tasks framework (issue 19): ``drain_queue``, ``start_draining``, ``purge_log``.

In-process backends: the immediate one runs a task as it is enqueued; the dummy one records each enqueued task
with its ``run_after``, so that the time of a chain's next run can be checked exactly (the tests run its task
with ``.call()``). Real worker processes (django-tasks-db, RQ, Celery) are tested elsewhere.
"""

import datetime
import importlib
import logging

import django
import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

import mailer
from mailer import drain, drain_checks, ratelimits, routing
from mailer.models import PRIORITY_DEFERRED, DrainChain, Message, MessageLog, SenderHeartbeat, make_message
from tests.support import dbconfig
from tests.support.queueing import queue
from tests.support.task_backends import DUMMY, IMMEDIATE, REFUSING, TASKS_MODULE

pytestmark = pytest.mark.django_db

MAILERS = pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS aliases need Django 6.1")


@pytest.fixture
def dummy(settings, tasks):
    """The dummy backend: what was enqueued is in ``.results``, nothing runs."""
    settings.TASKS = {"default": {"BACKEND": DUMMY}}
    backend = importlib.import_module(TASKS_MODULE).task_backends["default"]
    backend.clear()
    return backend


def runs(backend) -> list[tuple[str, datetime.datetime | None]]:
    """(alias, run_after) of each drain_queue enqueued on ``backend``."""
    return [(result.kwargs["alias"], result.task.run_after) for result in backend.results]


def in_transaction(capture, send) -> None:
    """Queue with ``send()`` in a transaction of its own, and run what it registered for the commit."""
    with capture(execute=True), transaction.atomic():
        send()


# --- drain_queue ------------------------------------------------------------------------------------------------


def test_a_drain_task_sends_the_alias_mail_and_ends_with_nothing_left(tasks, relay):
    for n in range(3):
        queue(f"m{n}", to=[f"r{n}@example.com"])
    result = tasks.drain_queue.enqueue(alias="default")
    assert result.return_value["sent"] == 3
    assert result.return_value["next_run"] is None
    assert sorted(relay.received()) == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert not Message.objects.exists()


def test_on_the_immediate_backend_a_drain_task_goes_on_in_itself_slice_after_slice(tasks, settings, relay):
    """Each slice ends after one message; the immediate backend cannot defer, so the task does not re-enqueue
    itself (it would recurse): it sends the next slice itself while mail is due."""
    settings.MAILER_DRAIN_SLICE = 1e-9
    signals = importlib.import_module(f"{TASKS_MODULE}.signals")
    enqueued = []
    signals.task_enqueued.connect(lambda **kw: enqueued.append(kw["task_result"]), weak=False, dispatch_uid="t")
    try:
        for n in range(3):
            queue(f"m{n}")
        result = tasks.drain_queue.enqueue(alias="default")
    finally:
        signals.task_enqueued.disconnect(dispatch_uid="t")
    assert result.return_value["sent"] == 3
    assert len(enqueued) == 1
    assert len(relay.received()) == 3


def test_the_immediate_backend_schedules_nothing_for_later_and_says_so_once(tasks, relay, caplog):
    ahead = timezone.now() + datetime.timedelta(minutes=5)
    queue("later", not_before=ahead, attempts=1, last_error="451 try again")
    caplog.set_level(logging.INFO, logger="mailer.tasks")
    tasks._told.clear()
    for _ in range(2):
        assert tasks.drain_queue.enqueue(alias="default").return_value["next_run"] is None
    said = [r.getMessage() for r in caplog.records if "cannot defer" in r.getMessage()]
    assert len(said) == 1 and ahead.isoformat() in said[0]
    assert Message.objects.count() == 1


def test_a_message_waiting_for_its_retry_is_the_next_run(dummy, tasks, relay):
    ahead = timezone.now() + datetime.timedelta(minutes=7)
    queue("retry", not_before=ahead, attempts=1, last_error="451 try again")
    queue("now")
    value = tasks.drain_queue.call(alias="default")
    assert (value["sent"], value["next_run"]) == (1, ahead.isoformat())
    assert runs(dummy) == [("default", ahead)]


def test_a_message_sent_at_a_later_time_is_the_next_run(dummy, tasks, relay):
    at = timezone.now() + datetime.timedelta(hours=2)
    mailer.send_mail("later", "body", "from@example.com", ["to@example.com"], send_at=at)
    value = tasks.drain_queue.call(alias="default")
    assert (value["sent"], value["next_run"]) == (0, at.isoformat())
    assert runs(dummy) == [("default", at)]


def test_a_relay_at_its_rate_limit_is_waited_for_by_a_later_run_not_in_the_worker(dummy, tasks, settings, relay):
    settings.MAILER_RATE_LIMITS = {ratelimits.relay_of(routing.route(None)): ["2/h"]}
    for n in range(3):
        queue(f"m{n}")
    before = timezone.now()
    value = tasks.drain_queue.call(alias="default")
    assert value["sent"] == 2 and value["paced_for"] > 3000
    [(alias, run_after)] = runs(dummy)
    # The window's first token frees its slot an hour (and the 5% slack) after it was reserved.
    assert before + datetime.timedelta(seconds=3600) <= run_after <= timezone.now() + datetime.timedelta(seconds=3781)
    assert value["next_run"] == run_after.isoformat()


def test_a_per_second_limit_is_waited_for_within_the_slice(dummy, tasks, settings, relay):
    """A wait shorter than SHORT_PACE, inside the slice, costs no task per second. About one second: 6 at 5/s."""
    settings.MAILER_RATE_LIMITS = {ratelimits.relay_of(routing.route(None)): ["5/s"]}
    for n in range(6):
        queue(f"m{n}")
    value = tasks.drain_queue.call(alias="default")
    assert (value["sent"], value["next_run"]) == (6, None)
    assert dummy.results == []


def test_a_slice_that_ended_with_mail_due_enqueues_the_next_run_for_now(dummy, tasks, settings, relay):
    settings.MAILER_DRAIN_SLICE = 1e-9
    for n in range(3):
        queue(f"m{n}")
    value = tasks.drain_queue.call(alias="default")
    assert value["sent"] == 1
    assert runs(dummy) == [("default", None)]  # no run_after: as soon as a worker is free
    assert Message.objects.count() == 2


def test_nothing_left_means_no_next_run(dummy, tasks, relay):
    queue("only")
    assert tasks.drain_queue.call(alias="default")["next_run"] is None
    assert dummy.results == []


@pytest.mark.skipif(
    dbconfig.vendor() == "sqlite",
    reason="the in-process SQLite database (shared cache) refuses a second writer at once instead of waiting, so "
    "the heartbeat thread's writes can fail the run's own (tests/settings.py turns heartbeats off for that): "
    "runs on the servers",
)
@pytest.mark.django_db(transaction=True)
def test_a_drain_task_keeps_a_heartbeat_with_its_alias(tasks, settings, relay):
    settings.MAILER_HEARTBEAT_INTERVAL = 0.05
    queue("beat")
    tasks.drain_queue.enqueue(alias="default")
    [row] = SenderHeartbeat.objects.all()
    assert (row.kind, row.alias, row.sent) == ("task", "default", 1)
    assert row.stopped_at is not None


# --- start_draining ---------------------------------------------------------------------------------------------


def test_queueing_one_by_one_starts_the_chains_once(dummy, settings, django_capture_on_commit_callbacks):
    settings.MAILER_DRAIN_TASKS = 3
    for n in range(200):
        in_transaction(django_capture_on_commit_callbacks, lambda n=n: queue(f"m{n}"))
    assert runs(dummy) == [("default", None)] * 3
    assert sorted(DrainChain.objects.values_list("alias", "slot")) == [("default", 0), ("default", 1), ("default", 2)]


def test_scheduled_mail_queued_one_by_one_starts_the_chains_once_for_its_time(
    dummy, settings, django_capture_on_commit_callbacks
):
    settings.MAILER_DRAIN_TASKS = 2
    at = timezone.now() + datetime.timedelta(hours=1)
    for n in range(50):
        in_transaction(django_capture_on_commit_callbacks, lambda n=n: queue(f"news {n}", not_before=at))
    assert runs(dummy) == [("default", at)] * 2
    sooner = at - datetime.timedelta(minutes=30)
    sooner_mail = ("sooner", "body", "from@example.com", ["to@example.com"])
    in_transaction(django_capture_on_commit_callbacks, lambda: mailer.send_mail(*sooner_mail, send_at=sooner))
    in_transaction(django_capture_on_commit_callbacks, lambda: queue("now"))
    assert runs(dummy)[2:] == [("default", sooner)] * 2 + [("default", None)] * 2


def test_start_draining_costs_one_query_when_the_chains_run(dummy, tasks, settings, django_assert_num_queries):
    settings.MAILER_DRAIN_TASKS = 2
    queue("one")
    assert tasks.start_draining() == 2
    with django_assert_num_queries(1):
        assert tasks.start_draining("default") == 0
    assert tasks.start_draining(tasks=4) == 2  # two more wanted: only those are enqueued
    assert len(dummy.results) == 4


def test_draining_is_off_by_default(dummy, tasks, django_capture_on_commit_callbacks):
    in_transaction(django_capture_on_commit_callbacks, lambda: queue("one"))
    assert tasks.start_draining() == 0
    assert dummy.results == []


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda: mailer.send_mail("s", "b", "f@example.com", ["t@example.com"]), id="send_mail"),
        pytest.param(
            lambda: mailer.send_html_mail("s", "b", "<p>b</p>", "f@example.com", ["t@example.com"]), id="html"
        ),
        pytest.param(lambda: mailer.send_mass_mail([("s", "b", "f@example.com", ["t@example.com"])]), id="mass"),
        pytest.param(
            lambda: __import__("django.core.mail").core.mail.send_mail("s", "b", "f@example.com", ["t@example.com"]),
            id="DbBackend",
        ),
        pytest.param(lambda: make_message("s", "b", "f@example.com", ["t@example.com"]).save(), id="make_message"),
    ],
)
def test_every_way_of_queueing_starts_the_chains_on_commit(dummy, settings, django_capture_on_commit_callbacks, send):
    settings.MAILER_DRAIN_TASKS = 1
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        send()
        assert dummy.results == []  # not before the commit: a worker could not see the mail yet
    assert runs(dummy) == [("default", None)]


def test_a_lost_chain_is_started_again_and_a_late_one_is_not(dummy, tasks, settings):
    settings.MAILER_DRAIN_TASKS = 2
    queue("one")
    assert tasks.start_draining() == 2
    chain = DrainChain.objects.get(slot=0)
    overdue = DrainChain.objects.filter(pk=chain.pk)
    overdue.update(due_at=timezone.now() - datetime.timedelta(seconds=drain.LOST_AFTER - 5))
    assert tasks.start_draining() == 0  # late, but maybe only behind other tasks on the workers
    overdue.update(due_at=timezone.now() - datetime.timedelta(seconds=drain.LOST_AFTER + 1))
    assert tasks.start_draining() == 1
    assert DrainChain.objects.get(pk=chain.pk).token != chain.token


def test_mail_queued_while_the_chain_waits_for_a_later_time_wakes_it(
    dummy, tasks, settings, relay, django_capture_on_commit_callbacks
):
    settings.MAILER_DRAIN_TASKS = 1
    at = timezone.now() + datetime.timedelta(hours=2)
    in_transaction(django_capture_on_commit_callbacks, lambda: queue("later", not_before=at))
    [first] = dummy.results
    dummy.clear()
    assert tasks.drain_queue.call(**first.kwargs)["next_run"] == at.isoformat()
    [waiting] = dummy.results
    dummy.clear()
    in_transaction(django_capture_on_commit_callbacks, lambda: queue("now"))
    [woken] = dummy.results
    assert (woken.task.run_after, woken.kwargs["slot"]) == (None, 0)
    assert tasks.drain_queue.call(**woken.kwargs)["sent"] == 1
    dummy.clear()
    # The run that waited for two hours was superseded: it ends, and the chain waits in the woken one's next run.
    assert tasks.drain_queue.call(**waiting.kwargs)["next_run"] is None
    assert dummy.results == []


def test_mail_queued_while_the_chain_waits_for_its_relay_does_not_wake_it(
    dummy, tasks, settings, relay, django_capture_on_commit_callbacks
):
    settings.MAILER_DRAIN_TASKS = 1
    settings.MAILER_RATE_LIMITS = {ratelimits.relay_of(routing.route(None)): ["1/h"]}
    queue("one")
    queue("two")
    assert tasks.start_draining() == 1
    [first] = dummy.results
    assert tasks.drain_queue.call(**first.kwargs)["sent"] == 1
    assert len(dummy.results) == 2  # the next run, an hour on
    in_transaction(django_capture_on_commit_callbacks, lambda: queue("three"))
    assert len(dummy.results) == 2  # it could not go before the relay opens either


def test_a_run_starts_its_alias_lost_chains_again_and_leaves_waiting_ones(dummy, tasks, settings, relay):
    settings.MAILER_DRAIN_TASKS = 2
    settings.MAILER_DRAIN_SLICE = 1e-9
    for n in range(4):
        queue(f"m{n}")
    assert tasks.start_draining() == 2
    first = dummy.results[0]
    other = DrainChain.objects.filter(slot=1)
    other.update(due_at=timezone.now() + datetime.timedelta(hours=1))  # waits for a later retry
    dummy.clear()
    tasks.drain_queue.call(**first.kwargs)
    assert [r.kwargs["slot"] for r in dummy.results] == [0]
    other.update(due_at=timezone.now() - datetime.timedelta(seconds=drain.LOST_AFTER + 1))
    dummy.clear()
    tasks.drain_queue.call(**DrainChain.objects.filter(slot=0).values("alias", "slot", "token")[0])
    assert sorted(r.kwargs["slot"] for r in dummy.results) == [0, 1]


def test_retrying_deferred_mail_starts_the_chains(dummy, settings, django_capture_on_commit_callbacks):
    settings.MAILER_DRAIN_TASKS = 1
    queue("deferred", priority=PRIORITY_DEFERRED)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("retry_deferred")
    assert runs(dummy) == [("default", None)]


def test_a_superseded_run_sends_its_slice_and_does_not_go_on(dummy, tasks, settings, relay):
    """The lost chain's worker was only slow: its run still sends, but the chain goes on from its new run alone."""
    settings.MAILER_DRAIN_TASKS = 1
    settings.MAILER_DRAIN_SLICE = 1e-9
    queue("one")
    queue("two")
    tasks.start_draining()
    [old] = dummy.results
    DrainChain.objects.update(due_at=timezone.now() - datetime.timedelta(seconds=drain.LOST_AFTER + 1))
    assert tasks.start_draining() == 1
    dummy.clear()
    value = tasks.drain_queue.call(**old.kwargs)
    assert (value["sent"], value["next_run"]) == (1, None)
    assert dummy.results == []


def test_a_run_enqueued_by_hand_goes_on_in_a_free_slot(dummy, tasks, settings, relay):
    settings.MAILER_DRAIN_SLICE = 1e-9
    queue("one")
    queue("two")
    assert tasks.drain_queue.call(alias="default")["sent"] == 1
    [next_run] = dummy.results
    assert next_run.kwargs["slot"] == 0 and DrainChain.objects.get().token == next_run.kwargs["token"]


def test_a_backend_that_refuses_loses_no_mail_and_breaks_no_queueing(
    tasks, settings, django_capture_on_commit_callbacks, caplog
):
    settings.TASKS = {"default": {"BACKEND": REFUSING}}
    settings.MAILER_DRAIN_TASKS = 1
    with caplog.at_level(logging.WARNING, logger="mailer.tasks"):
        in_transaction(django_capture_on_commit_callbacks, lambda: queue("kept"))
    assert Message.objects.count() == 1
    assert any("broker is down" in record.getMessage() for record in caplog.records)
    assert DrainChain.objects.get().due_at is None  # the slot is free: the next queueing tries again


@MAILERS
def test_chains_of_one_alias_never_send_another_alias_mail(dummy, tasks, settings, relay):
    queue_alias = dict(settings.MAILERS["default"])
    settings.MAILERS = {**settings.MAILERS, "a": queue_alias, "b": queue_alias}
    queue("for a", mailer="a")
    queue("for b", mailer="b")
    queue("default")
    assert tasks.drain_queue.call(alias="a")["sent"] == 1
    assert sorted(Message.objects.values_list("mailer", flat=True), key=str) == [None, "b"]
    settings.MAILER_DRAIN_TASKS = 1
    assert tasks.start_draining() == 2
    assert sorted(alias for alias, _ in runs(dummy)) == ["b", "default"]


def test_without_mailers_every_alias_is_the_default_chain(tasks):
    queue("x", mailer="gone")
    assert drain.queued_aliases() == ["default"]
    assert drain.queue_of("default").count() == 1


# --- purge_log --------------------------------------------------------------------------------------------------


def test_purge_log_deletes_what_purge_mail_log_deletes(tasks):
    old = timezone.now() - datetime.timedelta(days=40)
    for result in ("1", "1", "3"):
        MessageLog.objects.create(message_data="", when_added=old, when_attempted=old, result=result, priority="2")
    MessageLog.objects.create(message_data="", when_added=old, when_attempted=timezone.now(), result="1", priority="2")
    assert tasks.purge_log.enqueue(days=30).return_value == 2
    assert tasks.purge_log.enqueue(days=30, result="all").return_value == 1
    call_command("purge_mail_log", "30", "--result", "all")
    assert MessageLog.objects.count() == 1
    with pytest.raises(ValueError, match="one of success, failure, all"):
        tasks.purge_log.call(days=30, result="sent")


# --- checks -----------------------------------------------------------------------------------------------------


def check_ids() -> list[str]:
    return [message.id for message in drain_checks.check_drain_settings()]


@pytest.mark.parametrize("value", [-1, "2", 1.5, True, None])
def test_a_drain_tasks_setting_that_is_not_a_count_is_an_error(settings, value):
    settings.MAILER_DRAIN_TASKS = value
    assert check_ids() == ["mailer.E020"]


@pytest.mark.parametrize("value", [0, -1, "10", None])
def test_a_slice_that_is_not_seconds_is_an_error(settings, value):
    settings.MAILER_DRAIN_SLICE = value
    assert check_ids() == ["mailer.E023"]


def test_draining_without_the_tasks_framework_is_an_error(settings, monkeypatch):
    settings.MAILER_DRAIN_TASKS = 2
    assert check_ids() == []
    monkeypatch.setattr(drain_checks, "TASKS_MODULE", "no_such_tasks_framework")
    assert check_ids() == ["mailer.E021"]


def test_a_tasks_backend_not_in_tasks_is_an_error(tasks, settings):
    settings.MAILER_DRAIN_TASKS = 1
    settings.MAILER_TASKS_BACKEND = "mail"
    assert check_ids() == ["mailer.E022"]
    settings.TASKS = {"default": {"BACKEND": IMMEDIATE}, "mail": {"BACKEND": DUMMY}}
    assert check_ids() == []
