"""``queue_status()``, ``problems()`` and ``mailer_status`` with scheduled mail and paused relays (issue 15).

Mail queued with a ``send_at`` still ahead is *scheduled*: counted apart from mail due now and from mail
waiting for a retry, with the next send time shown, and never stuck before its time. A relay that asked
to slow down is paused for every sender: the status lists it with the end of its pause, as information;
the mail due behind it is not stuck while the pause lasts, and counts from the end of the pause after.
"""

import datetime
import io
import json
import smtplib

import pytest
from django.core.management import call_command
from django.utils import timezone

import mailer
from mailer import claims, pacing
from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MEDIUM, Message, RelayState
from mailer.routing import Route
from mailer.status import problems, queue_status
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
UNDECODED = "not decoded by the status"
THROTTLED = smtplib.SMTPRecipientsRefused({"to@example.com": (454, b"4.7.0 Throttling failure: Maximum sending rate")})


def at(**delta):
    """``NOW`` moved by ``delta`` (negative: in the past)."""
    return NOW + datetime.timedelta(**delta)


def scheduled(priority=PRIORITY_MEDIUM, *, added, send_at):
    """A message queued with a ``send_at``, not tried yet."""
    return queue(priority=priority, added=added, data=UNDECODED, not_before=send_at, attempts=0)


def waiting(*, added, retry_at):
    return queue(added=added, data=UNDECODED, not_before=retry_at, attempts=2, last_error="451 later")


def run(*args):
    """Run mailer_status; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("mailer_status", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def from_now(**delta):
    return timezone.now() + datetime.timedelta(**delta)


# --- Scheduled mail ----------------------------------------------------------------------------------


def test_scheduled_mail_is_counted_apart_from_due_mail_and_from_retries():
    queue(priority=PRIORITY_HIGH, added=at(seconds=-5), data=UNDECODED)
    scheduled(PRIORITY_HIGH, added=at(days=-3), send_at=at(hours=2))
    scheduled(PRIORITY_LOW, added=at(minutes=-5), send_at=at(minutes=15))
    queue(added=at(hours=-1), data=UNDECODED, not_before=at(hours=1), attempts=None)  # a row of 2.x: untried
    waiting(added=at(hours=-1), retry_at=at(minutes=3))
    scheduled(PRIORITY_DEFERRED, added=at(days=-1), send_at=at(minutes=1))  # deferred is deferred
    scheduled(added=at(hours=-2), send_at=at(seconds=-10))  # its time has come: due

    status = queue_status(now=NOW)
    assert (status.high, status.medium, status.low) == (1, 1, 0)
    assert (status.scheduled, status.waiting, status.deferred) == (3, 1, 1)
    assert (status.queued, status.total) == (2, 7)
    assert (status.next_scheduled, status.next_scheduled_in) == (at(minutes=15), 900.0)
    assert (status.next_retry, status.next_retry_in) == (at(minutes=3), 180.0)
    assert status.oldest_queued == at(seconds=-10)  # due since its send_at, not since it was queued


def test_mail_queued_with_send_at_is_counted_scheduled_and_the_due_count_is_what_a_sender_sends():
    mailer.send_mail("later", "body", "from@example.com", ["to@example.com"], send_at=from_now(hours=1))
    mailer.send_mail("now", "body", "from@example.com", ["to@example.com"])
    status = queue_status()
    assert (status.medium, status.scheduled, status.waiting) == (1, 1, 0)
    assert send_all().sent == status.queued == 1


def test_old_scheduled_mail_is_not_stuck():
    scheduled(added=at(days=-30), send_at=at(days=1))
    assert problems(queue_status(now=NOW), max_age=60, max_deferred=0) == []


def test_scheduled_mail_not_sent_long_after_its_time_is_stuck_from_its_time():
    scheduled(added=at(days=-30), send_at=at(minutes=-20))
    [found] = problems(queue_status(now=NOW), max_age=600)
    assert "has waited 1200.0s (20m 0s), longer than --max-age 600" in found


def test_as_dict_counts_scheduled_mail_and_the_next_send_time():
    scheduled(added=at(hours=-1), send_at=at(seconds=90))
    scheduled(added=at(hours=-1), send_at=at(days=2))
    waiting(added=at(hours=-1), retry_at=at(seconds=30))
    data = queue_status(now=NOW).as_dict()
    assert data["queue"] == {
        "high": 0,
        "medium": 0,
        "low": 0,
        "waiting": 1,
        "scheduled": 2,
        "deferred": 0,
        "other": 0,
        "total": 3,
    }
    assert (data["next_scheduled"], data["next_scheduled_in_seconds"]) == (at(seconds=90).isoformat(), 90.0)
    assert (data["next_retry"], data["next_retry_in_seconds"]) == (at(seconds=30).isoformat(), 30.0)
    assert (data["paused_relays"], data["behind_paused_relays"]) == ([], 0)
    assert json.loads(json.dumps(data)) == data


def test_table_and_json_show_scheduled_mail_and_the_next_send_time():
    scheduled(added=from_now(days=-2), send_at=from_now(hours=3, minutes=30))
    queue(added=from_now(seconds=-30), data=UNDECODED)
    code, out, err = run("--max-age", "600")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[5].split() == ["scheduled", "1"]
    assert lines[7].split() == ["total", "2"]
    assert lines[10].startswith("  next scheduled  ")
    assert lines[10].endswith("(in 3h 29m)") or lines[10].endswith("(in 3h 30m)")

    code, out, err = run("--json", "--max-age", "60")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["queue"]["scheduled"], data["queue"]["total"]) == (1, 2)
    assert 12590 <= data["next_scheduled_in_seconds"] <= 12600


# --- Paused relays -----------------------------------------------------------------------------------


@pytest.fixture
def paused(settings, failures):
    """The default relay answered "454 Throttling" to a real pass: paused for 5 minutes, its mail left due."""
    settings.MAILER_RETRY_DELAY = 300
    failures["slow down"] = THROTTLED
    queue("slow down", added=from_now(hours=-2))
    queue("next", added=from_now(hours=-1))
    send_all()
    failures.clear()
    assert Message.objects.due().count() == 2
    return RelayState.objects.get(relay="default")


def test_a_paused_relay_is_listed_and_the_mail_behind_it_is_not_stuck(paused):
    status = queue_status()
    assert status.paused == (("default", paused.paused_until),)
    assert (status.medium, status.behind_pauses) == (2, 2)  # due, behind the pause
    assert status.oldest_queued is None
    assert problems(status, max_age=60, max_deferred=0) == []


def test_once_the_pause_is_over_the_mail_is_due_from_its_end(paused):
    ended = from_now(minutes=-3)
    RelayState.objects.update(paused_until=ended)
    status = queue_status()
    assert (status.paused, status.behind_pauses) == ((), 0)
    assert status.oldest_queued == ended  # not two hours ago, when it was queued
    assert problems(status, max_age=600) == []
    [found] = problems(status, max_age=60)
    assert "longer than --max-age 60" in found


def test_mail_queued_after_a_pause_ended_is_due_from_when_it_was_queued(paused):
    RelayState.objects.update(paused_until=from_now(days=-1))
    status = queue_status()
    assert status.oldest_queued == Message.objects.order_by("when_added").first().when_added


def test_a_paused_relay_no_mail_goes_to_holds_nothing_back(paused):
    RelayState.objects.update(paused_until=from_now(days=-1))
    RelayState.objects.create(relay="elsewhere", paused_until=from_now(minutes=10), pause_seconds=600)
    status = queue_status()
    assert [relay for relay, _until in status.paused] == ["elsewhere"]
    assert status.behind_pauses == 0 and status.oldest_queued is not None


def test_table_and_json_list_the_paused_relays(paused):
    code, out, err = run("--max-age", "60")
    assert (code, err) == (0, "")  # two hours old, but behind a pause: healthy
    lines = out.splitlines()
    part = lines[lines.index("Paused relays") :]
    assert part[1].startswith("  default   until ") and part[1].endswith(("(in 4m 59s)", "(in 5m 0s)"))
    assert part[2].split() == ["due", "messages", "behind", "them", "2"]

    code, out, err = run("--json")
    data = json.loads(out)
    [relay] = data["paused_relays"]
    assert (relay["relay"], relay["paused_until"]) == ("default", paused.paused_until.isoformat())
    assert 290 <= relay["paused_for_seconds"] <= 300
    assert data["behind_paused_relays"] == 2 and data["oldest_queued"] is None


def test_which_messages_go_to_a_relay_follows_the_routes():
    # As with MAILERS on Django 6.1: "bulk" delivers itself, "alerts" (and any alias not listed, and no
    # alias) go to the default mailer.
    default = Route(path="django.core.mail.backends.smtp.EmailBackend")
    routes = {None: default, "bulk": Route(alias="bulk"), "alerts": default}
    for mailer_alias in (None, "bulk", "alerts", "gone"):
        queue(f"via {mailer_alias}", mailer=mailer_alias)

    def going_to(relay):
        held = ~claims.mailers_filter(pacing.claimable(routes, {relay}))
        return sorted(Message.objects.filter(held).values_list("mailer", flat=True), key=str)

    assert going_to("bulk") == ["bulk"]
    assert going_to("default") == [None, "alerts", "gone"]
    assert pacing.claimable(routes, {"nowhere"}) is None
