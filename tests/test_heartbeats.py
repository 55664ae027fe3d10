"""Issue 19's "senders that see each other": each sending process keeps a heartbeat row (mailer.heartbeats).

Real senders run as child processes of ``tests.project`` against a fresh database of the vendor under test;
``mailer_status --json``, run as another child, is what the tests read. Two "hosts" are two working
directories (each with its own file lock) and two ``MAILER_SENDER_HOST`` names. Heartbeats come every
0.2 s here, and the reader takes a sender for gone after 1 s without one (``MAILER_SENDER_GONE_AFTER``).
The rule itself (:func:`mailer.senders.state`), pruning and the admin page are tested in this process.
"""

from __future__ import annotations

import datetime
import json
import signal

import django
import pytest
from django.utils import timezone

from mailer import senders
from mailer.sender_models import SenderHeartbeat
from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.project_db import migrated_project, run_in_project, select, send_mail_in_project, table_counts
from tests.support.senders import SenderProcess
from tests.support.waiting import wait_until

BEATS = {"MAILER_HEARTBEAT_INTERVAL": 0.2}
GONE_AFTER = 1  # seconds, for the process that reads the rows


def sender_rows(env: dict, timeout: float = 60) -> list[dict]:
    """The ``"senders"`` of ``mailer_status --json``, read by a child that takes 1 s of silence for gone."""
    reader = {**env, "MAILER_TEST_SETTINGS": json.dumps({"MAILER_SENDER_GONE_AFTER": GONE_AFTER})}
    done = manage("mailer_status", "--json", env=reader, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["senders"]


def wait_for_senders(env: dict, wanted, what: str, timeout: float = 60) -> list[dict]:
    """Read the senders until ``wanted(rows)`` holds (the event), or fail the test."""
    seen: list = []

    def found():
        seen[:] = sender_rows(env)
        return wanted(seen)

    wait_until(found, timeout, interval=0.1, message=lambda: f"{what}; the senders: {seen}")
    return seen


def by_host(rows: list[dict]) -> dict[str, dict]:
    return {row["host"]: row for row in rows}


@pytest.fixture
def project(tmp_path):
    """A migrated database, senders taking the file lock in their working directory (none set for them)."""
    with migrated_project(tmp_path, "beats", MAILER_TEST_EMPTY_QUEUE_SLEEP="0.1") as env:
        env.pop("MAILER_TEST_LOCK_PATH")
        yield env


def start_host(env: dict, tmp_path, host: str, command: str = "runmailer") -> SenderProcess:
    """``command`` run by "host" ``host``: its own working directory, its own host name in the heartbeat."""
    workdir = tmp_path / host
    workdir.mkdir()
    settings = {**BEATS, "MAILER_SENDER_HOST": host}
    return SenderProcess(command, env, tmp_path / f"{host}.log", settings=settings, cwd=workdir)


def test_two_hosts_are_live_then_a_killed_one_is_gone_and_a_stopped_one_stopped(project, tmp_path):
    send_mail_in_project(project, 30, to="to{n}@example.com")
    alpha = start_host(project, tmp_path, "alpha")
    beta = start_host(project, tmp_path, "beta")
    try:
        # Both live, each with its own working directory's lock, and between them they sent the 30 messages.
        rows = wait_for_senders(
            project,
            lambda rows: (
                {row["host"]: row["state"] for row in rows} == {"alpha": "live", "beta": "live"}
                and sum(row["sent"] for row in rows) == 30
            ),
            "alpha and beta live, 30 sent between them",
        )
        assert {row["pid"] for row in rows} == {alpha.proc.pid, beta.proc.pid}
        assert {row["kind"] for row in rows} == {"runmailer"}
        assert table_counts(project)["logs"]["1"] == 30

        beta.proc.send_signal(signal.SIGKILL)
        beta.wait(10)
        rows = wait_for_senders(
            project, lambda rows: by_host(rows)["beta"]["state"] == "gone", "beta reported gone after SIGKILL"
        )
        assert by_host(rows)["beta"]["stopped_at"] is None
        assert by_host(rows)["beta"]["last_seen_age_seconds"] > GONE_AFTER
        assert by_host(rows)["alpha"]["state"] == "live"

        assert alpha.stop() == 0, alpha.log()
        rows = sender_rows(project)  # written before the process exited: no waiting
        assert by_host(rows)["alpha"]["state"] == "stopped"
        assert by_host(rows)["alpha"]["stopped_at"] is not None
        assert by_host(rows)["alpha"]["rate"] == 0.0
        assert by_host(rows)["beta"]["state"] == "gone"
        assert "heartbeat" not in alpha.log(), alpha.log()
    finally:
        alpha.kill()
        beta.kill()


def test_the_table_lists_live_and_gone_senders(project, tmp_path):
    gamma = start_host(project, tmp_path, "gamma")
    try:
        wait_for_senders(project, lambda rows: [row["state"] for row in rows] == ["live"], "gamma live")
        reader = {**project, "MAILER_TEST_SETTINGS": json.dumps({"MAILER_SENDER_GONE_AFTER": GONE_AFTER})}
        table = manage("mailer_status", env=reader).stdout
        assert "Senders     1 live" in table
        assert f"  live  gamma:{gamma.proc.pid} runmailer  sent 0, 0.0/s, seen " in table
        gamma.proc.send_signal(signal.SIGKILL)
        gamma.wait(10)
        wait_for_senders(project, lambda rows: [row["state"] for row in rows] == ["gone"], "gamma gone")
        table = manage("mailer_status", env=reader).stdout
        assert "Senders     0 live" in table
        assert f"  gone  gamma:{gamma.proc.pid} runmailer" in table
    finally:
        gamma.kill()


def test_send_mail_and_the_task_leave_a_stopped_row_with_what_they_sent(project):
    env = {**project, "MAILER_TEST_SETTINGS": json.dumps({**BEATS, "MAILER_SENDER_HOST": "cron"})}
    send_mail_in_project(project, 5)
    done = manage("send_mail", env=env)
    assert done.returncode == 0, done.stderr
    [row] = sender_rows(project)
    assert (row["host"], row["kind"], row["state"], row["sent"]) == ("cron", "send_mail", "stopped", 5)

    module = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    tasks = {"TASKS": {"default": {"BACKEND": f"{module}.backends.immediate.ImmediateBackend"}}}
    worker = {**project, "MAILER_TEST_SETTINGS": json.dumps({**BEATS, **tasks, "MAILER_SENDER_HOST": "worker"})}
    send_mail_in_project(project, 3)
    run_in_project(worker, "from mailer.tasks import send_queued_mail; send_queued_mail.enqueue()")
    task = by_host(sender_rows(project))["worker"]
    assert (task["kind"], task["state"], task["sent"]) == ("task", "stopped", 3)


def in_pass(rows: list[dict], total: int) -> bool:
    """One live sender, part way through a pass of ``total`` messages, sending now."""
    return len(rows) == 1 and rows[0]["state"] == "live" and 0 < rows[0]["sent"] < total and rows[0]["rate"] > 0


HEARTBEATS = "SELECT sent, rate FROM mailer_senderheartbeat"

# One message a batch, 0.3 s apart: a pass of 12 takes 3.6 s, and its commits are counted as they come.
SLOW_PASS = {"MAILER_EMAIL_THROTTLE": 0.3}


@pytest.mark.parametrize(
    "command",
    [
        "runmailer",
        pytest.param(
            "runmailer_pg",
            marks=pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="runmailer_pg needs PostgreSQL"),
        ),
    ],
)
def test_a_long_pass_shows_what_it_sent_so_far_and_its_rate(project, tmp_path, command):
    send_mail_in_project(project, 12)
    settings = {**BEATS, **SLOW_PASS, "MAILER_SENDER_HOST": "slow"}
    sender = SenderProcess(command, project, tmp_path / "slow.log", settings=settings)
    try:
        # The row read straight from the database, every 20 ms: a mailer_status child takes a second or more on a
        # loaded machine, and could miss the 3.6 s of the pass. What mailer_status shows is checked next.
        wait_until(
            lambda: any(0 < sent < 12 and rate > 0 for sent, rate in select(project, HEARTBEATS)),
            60,
            interval=0.02,
            message="part of the pass counted, at some rate",
        )
        [row] = sender_rows(project)
        assert row["kind"] == command
        wait_for_senders(project, lambda rows: rows[0]["sent"] == 12, "the whole pass counted")
        assert sender.stop() == 0, sender.log()
        assert sender_rows(project)[0]["state"] == "stopped"
    finally:
        sender.kill()


@pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="runmailer_pg needs PostgreSQL")
def test_runmailer_pg_keeps_a_heartbeat(project, tmp_path):
    listener = start_host(project, tmp_path, "listener", command="runmailer_pg")
    try:
        send_mail_in_project(project, 4)
        rows = wait_for_senders(
            project, lambda rows: rows and rows[0]["state"] == "live" and rows[0]["sent"] == 4, "runmailer_pg, 4 sent"
        )
        assert rows[0]["kind"] == "runmailer_pg"
        assert listener.stop() == 0, listener.log()
        assert sender_rows(project)[0]["state"] == "stopped"
    finally:
        listener.kill()


@pytest.fixture
def before_0018(tmp_path):
    """A database migrated up to 0017 only: the code of this version deployed before ``migrate`` ran."""
    with migrated_project(tmp_path, "pre0018", MAILER_TEST_EMPTY_QUEUE_SLEEP="0.1") as env:
        done = manage("migrate", "mailer", "0017", "--no-input", env=env)
        assert done.returncode == 0, done.stderr
        yield env


def test_without_the_table_senders_send_with_one_warning_and_status_says_unknown(before_0018, tmp_path):
    env = {**before_0018, "MAILER_TEST_SETTINGS": json.dumps(BEATS)}
    send_mail_in_project(before_0018, 3)
    done = manage("send_mail", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("no sender heartbeats: the mailer tables are not up to date") == 1, done.stderr
    assert table_counts(before_0018)["logs"]["1"] == 3

    sender = SenderProcess("runmailer", before_0018, tmp_path / "runmailer.log", settings=BEATS)
    try:
        sender.wait_for_log("no sender heartbeats")
        send_mail_in_project(before_0018, 2)
        wait_until(lambda: table_counts(before_0018)["logs"]["1"] == 5, 30, message=sender.log)
        assert sender.stop() == 0, sender.log()
    finally:
        sender.kill()
    assert sender.log().count("no sender heartbeats") == 1, sender.log()

    assert sender_rows(before_0018) is None
    table = manage("mailer_status", env=before_0018)
    assert table.returncode == 0, table.stderr
    assert "Senders: unknown (no heartbeat table: run `manage.py migrate mailer`)" in table.stdout


def test_a_heartbeat_that_cannot_be_written_does_not_stop_sending(project, tmp_path):
    """The heartbeats go to a database that cannot be opened: one warning, the mail is sent, exit 0."""
    settings = {
        **BEATS,
        "DATABASES": {
            "default": dbconfig.database(project["MAILER_TEST_DB_NAME"]),
            "beats": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "missing" / "beats.sqlite3")},
        },
        "DATABASE_ROUTERS": ["tests.routers.HeartbeatsElsewhere"],
    }
    send_mail_in_project(project, 4)
    done = manage("send_mail", env={**project, "MAILER_TEST_SETTINGS": json.dumps(settings)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("could not write the sender heartbeat") == 1, done.stderr
    assert table_counts(project)["logs"]["1"] == 4


def test_a_heartbeat_interval_that_is_not_a_number_turns_heartbeats_off_not_sending(project):
    settings = {"MAILER_HEARTBEAT_INTERVAL": "often"}
    send_mail_in_project(project, 2)
    done = manage("send_mail", env={**project, "MAILER_TEST_SETTINGS": json.dumps(settings)})
    assert done.returncode == 0, done.stderr
    assert "MAILER_HEARTBEAT_INTERVAL is 'often', not a number of seconds: no sender heartbeats" in done.stderr
    assert table_counts(project)["logs"]["1"] == 2
    assert sender_rows(project) == []


# The rule, in this process.

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def row(seconds_ago: float, interval: float = 10.0, stopped: bool = False) -> SenderHeartbeat:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return SenderHeartbeat(
        host="h",
        pid=1,
        kind="runmailer",
        started=seen,
        last_seen=seen,
        interval=interval,
        stopped_at=seen if stopped else None,
    )


def test_a_sender_is_gone_after_three_of_its_intervals_and_never_before_the_floor(settings):
    settings.MAILER_SENDER_GONE_AFTER = None
    assert senders.state(row(29.9, interval=1), NOW) == senders.LIVE  # the floor: 30 s
    assert senders.state(row(30.1, interval=1), NOW) == senders.GONE
    assert senders.state(row(59.9, interval=20), NOW) == senders.LIVE  # 3 x 20 s
    assert senders.state(row(60.1, interval=20), NOW) == senders.GONE
    assert senders.state(row(3600, stopped=True), NOW) == senders.STOPPED
    settings.MAILER_SENDER_GONE_AFTER = 5
    assert senders.state(row(4.9, interval=20), NOW) == senders.LIVE
    assert senders.state(row(5.1, interval=20), NOW) == senders.GONE


@pytest.mark.django_db
def test_rows_stopped_or_gone_for_a_day_are_pruned_and_not_shown():
    now = timezone.now()
    old = now - senders.FORGET_AFTER - datetime.timedelta(seconds=1)
    recent = now - datetime.timedelta(hours=23)
    for pid, seen, stopped in [(1, old, None), (2, old, old), (3, recent, None), (4, recent, recent)]:
        SenderHeartbeat.objects.create(
            host="h", pid=pid, kind="runmailer", started=seen, last_seen=seen, stopped_at=stopped
        )
    assert [(s.pid, s.state) for s in senders.sender_statuses(now)] == [(3, "gone"), (4, "stopped")]
    assert senders.prune(now, "default") == 2
    assert sorted(SenderHeartbeat.objects.values_list("pid", flat=True)) == [3, 4]


@pytest.mark.django_db
def test_the_admin_lists_senders_with_their_state_and_edits_nothing(admin_client):
    now = timezone.now()
    SenderHeartbeat.objects.create(host="alpha", pid=7, kind="runmailer", started=now, last_seen=now)
    page = admin_client.get("/admin/mailer/senderheartbeat/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "alpha" in text and ">live<" in text
    assert admin_client.get("/admin/mailer/senderheartbeat/add/").status_code == 403
