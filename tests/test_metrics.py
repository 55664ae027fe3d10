"""Prometheus metrics: ``mailer.metrics.prometheus_text()``, ``mailer_status --prometheus``, ``mailer.views.metrics``.

The output is read with ``prometheus_client``'s own parser, and every figure is compared with what the
database holds, classified here in Python from the rows (not by the SQL the status runs) and checked
against the managers' querysets (``due()``, ``waiting_for_retry()``, ``scheduled()``).
"""

import base64
import datetime
import io
import time
import urllib.error
import urllib.request

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mailer import ratelimits
from mailer.choices import Priority, Result
from mailer.metrics import CONTENT_TYPE, prometheus_text
from mailer.models import Message, MessageLog
from mailer.status import queue_status
from tests.support.procs import manage
from tests.support.project_db import migrated_project, run_in_project
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

UNDECODED = "not decoded by the metrics"
ODD = 'we"ird\\alias\nline'  # a quote, a backslash and a newline: each must be escaped in a label value
ALIASES = [None, "bulk", ODD]
SERIES = {
    "mailer_queue_messages",
    "mailer_queue_waiting_messages",
    "mailer_queue_scheduled_messages",
    "mailer_queue_oldest_age_seconds",
    "mailer_queue_paused_messages",
    "mailer_relays_paused",
    "mailer_relay_pause_remaining_seconds",
    "mailer_log_entries",
    "mailer_log_recent_entries",
    "mailer_last_success_timestamp_seconds",
}
TOKEN = "s3cret-token-for-the-scrape-job-0123456789"
URL = "/mailer/metrics"


def from_now(**delta):
    return timezone.now() + datetime.timedelta(**delta)


def parse(text):
    """``{series: {labels as sorted pairs: value}}``; every family must be a documented gauge."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation, family.name
        found[family.name] = {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}
    return found


def fill_queue():
    """Each priority (and a hand-set one) through each alias, due, waiting for a retry and scheduled."""
    for alias in ALIASES:
        for priority in [*Priority, 7]:
            for age in range(1 + int(priority) % 3):
                queue(priority=priority, mailer=alias, data=UNDECODED, added=from_now(hours=-age - 1))
        queue(priority=Priority.HIGH, mailer=alias, data=UNDECODED, not_before=from_now(hours=1), attempts=2)
        queue(priority=Priority.LOW, mailer=alias, data=UNDECODED, not_before=from_now(hours=2), attempts=0)
        queue(priority=Priority.LOW, mailer=alias, data=UNDECODED, not_before=from_now(hours=-1), attempts=1)
    queue(priority=Priority.MEDIUM, mailer="bulk", data=UNDECODED, not_before=from_now(days=1), attempts=None)


def fill_log():
    for minutes, result in [(3 * 24 * 60, Result.SUCCESS), (25 * 60, Result.FAILURE), (300, Result.DONT_SEND)]:
        for attempted in [from_now(minutes=-minutes)] * 2:
            log(result, attempted)
    for result in [Result.SUCCESS, Result.SUCCESS, Result.FAILURE, Result.DONT_SEND]:
        log(result, from_now(minutes=-20))


def log(result, attempted):
    MessageLog.objects.create(
        message_data=UNDECODED,
        when_added=attempted - datetime.timedelta(seconds=5),
        priority=Priority.MEDIUM,
        when_attempted=attempted,
        result=result,
        log_message="",
    )


def expected_queue(now):
    """The queue by alias and figure, classified from the rows as the docs define each figure."""
    counts = {}
    for row in Message.objects.values("mailer", "priority", "not_before", "attempts"):
        alias = row["mailer"] or "default"
        if row["priority"] == Priority.DEFERRED:
            figure = "deferred"
        elif row["not_before"] is not None and row["not_before"] > now:
            figure = "waiting" if row["attempts"] else "scheduled"
        else:
            figure = Priority(row["priority"]).name.lower() if row["priority"] in Priority.values else "other"
        counts[alias, figure] = counts.get((alias, figure), 0) + 1
    return counts


# --- The figures, parsed by prometheus_client ----------------------------------------------------------


def test_every_figure_equals_what_the_database_holds():
    fill_queue()
    fill_log()
    now = timezone.now()
    before = time.time()
    metrics = parse(prometheus_text())
    after = time.time()
    assert set(metrics) == SERIES
    counts = expected_queue(now)

    queued = metrics["mailer_queue_messages"]
    for alias in ["default", "bulk", ODD]:
        for priority in ["high", "medium", "low", "other", "deferred"]:
            assert queued[("alias", alias), ("priority", priority)] == counts.get((alias, priority), 0)
        for figure in ["waiting", "scheduled"]:
            assert metrics[f"mailer_queue_{figure}_messages"][(("alias", alias),)] == counts[alias, figure]
    assert len(queued) == 15  # three aliases, five priorities: nothing else
    # The same totals as the managers' querysets, which the senders and the admin use.
    assert sum(queued.values()) == Message.objects.due().count() + Message.objects.deferred().count()
    assert sum(metrics["mailer_queue_waiting_messages"].values()) == Message.objects.waiting_for_retry().count() == 3
    assert sum(metrics["mailer_queue_scheduled_messages"].values()) == Message.objects.scheduled().count() == 4

    due = [m.when_added if m.not_before is None else max(m.when_added, m.not_before) for m in Message.objects.due()]
    oldest = min(due).timestamp()
    [age] = metrics["mailer_queue_oldest_age_seconds"].values()
    assert before - oldest - 0.01 <= age <= after - oldest + 0.01

    # The whole log: one series per result, whatever the entries' age.
    entries = metrics["mailer_log_entries"]
    assert entries == {(("result", r.name.lower()),): MessageLog.objects.filter(result=r).count() for r in Result}
    assert entries == {(("result", "success"),): 4, (("result", "dont_send"),): 3, (("result", "failure"),): 3}
    recent = metrics["mailer_log_recent_entries"]
    for window, span in [("1h", datetime.timedelta(hours=1)), ("24h", datetime.timedelta(days=1))]:
        for result in Result:
            expected = MessageLog.objects.filter(result=result, when_attempted__gte=now - span).count()
            assert recent[("result", result.name.lower()), ("window", window)] == expected
    assert recent[("result", "success"), ("window", "1h")] == 2
    assert recent[("result", "dont_send"), ("window", "24h")] == 3
    assert len(recent) == 6
    newest = MessageLog.objects.filter(result=Result.SUCCESS).order_by("-when_attempted").first().when_attempted
    assert metrics["mailer_last_success_timestamp_seconds"] == {(): pytest.approx(newest.timestamp(), abs=0.001)}

    assert metrics["mailer_relays_paused"] == {(): 0}
    assert metrics["mailer_relay_pause_remaining_seconds"] == {}
    assert metrics["mailer_queue_paused_messages"] == {(): 0}


def test_a_paused_relay_and_the_mail_behind_it():
    fill_queue()
    until = ratelimits.pause("default", retry_after=300)  # as a sender does when the relay says "slow down"
    ratelimits.pause('odd"relay\\', retry_after=60)
    ratelimits.pause("over", retry_after=0)  # ended already: not paused
    text = prometheus_text()
    metrics = parse(text)
    assert metrics["mailer_relays_paused"] == {(): 2}
    remaining = metrics["mailer_relay_pause_remaining_seconds"]
    assert set(remaining) == {(("relay", "default"),), (("relay", 'odd"relay\\'),)}
    assert 290 <= remaining[(("relay", "default"),)] <= (until - timezone.now()).total_seconds() + 1
    assert 'mailer_relay_pause_remaining_seconds{relay="odd\\"relay\\\\"}' in text
    # Every alias goes to the default relay here (MAILER_EMAIL_BACKEND): all the due mail waits behind it,
    # and none of it counts as due for the oldest age while the pause lasts.
    assert metrics["mailer_queue_paused_messages"] == {(): Message.objects.due().count()}
    assert metrics["mailer_queue_oldest_age_seconds"] == {(): 0}


def test_an_empty_queue_still_has_every_series_of_the_default_alias():
    metrics = parse(prometheus_text())
    assert metrics["mailer_queue_messages"] == {
        (("alias", "default"), ("priority", priority)): 0 for priority in ["high", "medium", "low", "deferred"]
    }
    assert metrics["mailer_queue_waiting_messages"] == {(("alias", "default"),): 0}
    assert metrics["mailer_queue_oldest_age_seconds"] == {(): 0}
    assert metrics["mailer_last_success_timestamp_seconds"] == {}  # no success yet: no sample, not a zero
    assert metrics["mailer_log_entries"] == {(("result", r),): 0 for r in ["success", "dont_send", "failure"]}
    assert set(metrics["mailer_log_recent_entries"].values()) == {0}


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_every_queue_alias_has_its_samples_and_a_delivering_alias_none(settings):
    settings.MAILERS = {
        "default": {"BACKEND": "mailer.backend.DbBackend"},
        "bulk": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "smtp"}},
        "smtp": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
    }
    queue(priority=Priority.LOW, mailer="gone", data=UNDECODED)  # an alias since removed: still counted as queued
    metrics = parse(prometheus_text())
    assert {dict(labels)["alias"] for labels in metrics["mailer_queue_messages"]} == {"default", "bulk", "gone"}
    assert metrics["mailer_queue_waiting_messages"][(("alias", "bulk"),)] == 0
    assert metrics["mailer_queue_messages"][("alias", "gone"), ("priority", "low")] == 1


def test_label_values_are_escaped():
    queue(priority=Priority.HIGH, mailer=ODD, data=UNDECODED)
    text = prometheus_text()
    assert 'mailer_queue_messages{alias="we\\"ird\\\\alias\\nline",priority="high"} 1\n' in text
    assert parse(text)["mailer_queue_messages"][("alias", ODD), ("priority", "high")] == 1


def test_the_figures_are_those_of_queue_status():
    fill_queue()
    fill_log()
    status = queue_status(whole_log=True)
    metrics = parse(prometheus_text(status))
    for name in ["success", "dont_send", "failure"]:
        assert metrics["mailer_log_entries"][(("result", name),)] == getattr(status.log_total, name)
        for window, counts in [("1h", status.last_hour), ("24h", status.last_day)]:
            assert metrics["mailer_log_recent_entries"][("result", name), ("window", window)] == getattr(counts, name)
    queued = metrics["mailer_queue_messages"]
    for priority in ["high", "medium", "low", "other", "deferred"]:
        assert sum(v for labels, v in queued.items() if ("priority", priority) in labels) == getattr(status, priority)
    assert sum(metrics["mailer_queue_waiting_messages"].values()) == status.waiting
    assert sum(metrics["mailer_queue_scheduled_messages"].values()) == status.scheduled
    assert metrics["mailer_queue_oldest_age_seconds"] == {(): pytest.approx(status.oldest_queued_age, abs=0.001)}


def test_a_status_read_without_the_whole_log_is_refused():
    with pytest.raises(ValueError, match="whole_log=True"):
        prometheus_text(queue_status())


def test_purging_the_log_lowers_its_entries_and_not_the_recent_ones():
    fill_log()
    before = parse(prometheus_text())
    call_command("purge_mail_log", "1", "--result", "all")  # the entries of three days ago and of 25 hours ago
    after = parse(prometheus_text())
    assert after["mailer_log_entries"] == {
        (("result", "success"),): 2,
        (("result", "dont_send"),): 3,
        (("result", "failure"),): 1,
    }
    assert sum(after["mailer_log_entries"].values()) == MessageLog.objects.count() == 6
    assert after["mailer_log_recent_entries"] == before["mailer_log_recent_entries"]


def test_a_bounded_number_of_queries_whatever_the_queue_holds(django_assert_num_queries):
    fill_log()
    queue(data=UNDECODED)
    # The relays' pauses; the queue grouped by priority and alias; the whole log grouped by result, which also
    # gives the recent windows and the last success.
    with django_assert_num_queries(3):
        small = prometheus_text()
    Message.objects.bulk_create(
        Message(message_data=UNDECODED, priority=n % 5, mailer=f"alias{n % 40}", not_before=from_now(minutes=n - 500))
        for n in range(1000)
    )
    ratelimits.pause("default", retry_after=60)
    MessageLog.objects.filter(result=Result.SUCCESS, when_attempted__gte=from_now(days=-1)).delete()
    with django_assert_num_queries(3):  # nothing sent for a day: the last success still comes from that query
        large = parse(prometheus_text())
    assert len(large["mailer_queue_messages"]) > len(parse(small)["mailer_queue_messages"])
    assert large["mailer_last_success_timestamp_seconds"] == {(): pytest.approx(from_now(days=-3).timestamp(), abs=5)}


def test_no_message_is_decoded(monkeypatch):
    from mailer import serialization

    queue(data="garbage that does not decode")

    def refuse(*args, **kwargs):
        raise AssertionError("the metrics decoded message data")

    monkeypatch.setattr(serialization, "loads", refuse)
    assert parse(prometheus_text())["mailer_queue_messages"][("alias", "default"), ("priority", "medium")] == 1


# --- mailer_status --prometheus ------------------------------------------------------------------------


def test_the_command_prints_the_metrics():
    fill_queue()
    out = io.StringIO()
    call_command("mailer_status", "--prometheus", stdout=out)
    text = out.getvalue()
    assert text.endswith("gauge\n")  # the last family, with no sample: nothing was sent yet
    assert "\n\n" not in text
    metrics = parse(text)
    assert set(metrics) == SERIES
    assert (
        sum(metrics["mailer_queue_messages"].values()) == Message.objects.exclude(not_before__gt=timezone.now()).count()
    )


def test_json_and_prometheus_together_are_refused():
    with pytest.raises(CommandError, match="cannot be combined"):
        call_command("mailer_status", "--prometheus", "--json")


@pytest.fixture
def project_db(tmp_path):
    with migrated_project(tmp_path, "metrics") as env:
        yield env


QUEUE_IN_PROJECT = """
import datetime, mailer
from django.utils import timezone
later = timezone.now() + datetime.timedelta(hours=1)
mailer.send_mail("now", "body", "from@example.com", ["to@example.com"], priority="high")
mailer.send_mail("later", "body", "from@example.com", ["to@example.com"], send_at=later)
"""


def test_the_command_in_a_child_process(project_db):
    run_in_project(project_db, QUEUE_IN_PROJECT)
    done = manage("mailer_status", "--prometheus", "--max-age", "3600", env=project_db)
    assert (done.returncode, done.stderr) == (0, "")
    metrics = parse(done.stdout)
    assert metrics["mailer_queue_messages"][("alias", "default"), ("priority", "high")] == 1
    assert metrics["mailer_queue_scheduled_messages"] == {(("alias", "default"),): 1}
    done = manage("mailer_status", "--prometheus", "--json", env=project_db)
    assert done.returncode == 2 and "cannot be combined" in done.stderr


# --- The view --------------------------------------------------------------------------------------------


@pytest.fixture
def tokens(settings):
    settings.MAILER_METRICS_TOKENS = [TOKEN]
    return settings


def bearer(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def basic(user, password):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_anonymous_requests_are_refused_before_any_query(client, tokens, django_assert_num_queries):
    queue(data=UNDECODED)
    with django_assert_num_queries(0):
        response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer ")
    assert b"mailer_" not in response.content


@pytest.mark.parametrize(
    "headers",
    [
        bearer("wrong"),
        bearer(TOKEN[:-1]),
        bearer(TOKEN + "x"),
        bearer(""),
        {"HTTP_AUTHORIZATION": TOKEN},  # no scheme
        {"HTTP_AUTHORIZATION": f"Token {TOKEN}"},
        basic("prometheus", "wrong"),
        {"HTTP_AUTHORIZATION": "Basic not-base64!"},
    ],
)
def test_a_wrong_token_is_refused(client, tokens, headers):
    response = client.get(URL, **headers)
    assert response.status_code == 401 and b"mailer_" not in response.content


def test_a_scrape_with_the_token_is_served(client, tokens):
    queue(priority=Priority.LOW, data=UNDECODED)
    for headers in [bearer(TOKEN), {"HTTP_AUTHORIZATION": f"bearer   {TOKEN} "}, basic("prometheus", TOKEN)]:
        response = client.get(URL, **headers)
        assert response.status_code == 200
        assert response["Content-Type"] == CONTENT_TYPE
        assert "no-cache" in response["Cache-Control"]
        metrics = parse(response.content.decode())
        assert metrics["mailer_queue_messages"][("alias", "default"), ("priority", "low")] == 1


def test_tokens_can_be_rotated_and_an_empty_one_lets_nobody_in(client, settings):
    settings.MAILER_METRICS_TOKENS = ["old-token-still-accepted", TOKEN]
    assert client.get(URL, **bearer("old-token-still-accepted")).status_code == 200
    assert client.get(URL, **bearer(TOKEN)).status_code == 200
    settings.MAILER_METRICS_TOKENS = TOKEN  # one string
    assert client.get(URL, **bearer(TOKEN)).status_code == 200
    settings.MAILER_METRICS_TOKENS = ""
    assert client.get(URL, **bearer("")).status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer").status_code == 401
    assert client.get(URL, **basic("", "")).status_code == 401


def test_without_the_setting_no_token_is_accepted(client):
    assert client.get(URL, **bearer(TOKEN)).status_code == 401


def test_a_malformed_setting_is_reported(client, settings):
    settings.MAILER_METRICS_TOKENS = [TOKEN, 42]
    with pytest.raises(ImproperlyConfigured, match="MAILER_METRICS_TOKENS"):
        client.get(URL, **bearer(TOKEN))


def test_staff_may_read_it_in_a_browser_and_other_users_may_not(client, django_user_model):
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user = django_user_model.objects.create_user("user", password="pw")
    client.force_login(user)
    assert client.get(URL).status_code == 403
    client.force_login(staff)
    response = client.get(URL)
    assert response.status_code == 200 and "mailer_queue_messages" in parse(response.content.decode())
    staff.is_active = False
    staff.save()
    assert client.get(URL).status_code in (401, 403)


def test_only_get_and_head(client, tokens):
    assert client.head(URL, **bearer(TOKEN)).status_code == 200
    assert client.post(URL, **bearer(TOKEN)).status_code == 405


# What Prometheus 2.x/3.x sends with a scrape (besides its User-Agent and scrape timeout header).
SCRAPE_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.django_db(transaction=True)
def test_a_scrape_over_http(live_server, tokens):
    queue(priority=Priority.HIGH, data=UNDECODED)
    headers = {
        "Accept": SCRAPE_ACCEPT,
        "User-Agent": "Prometheus/3.0.0",
        "X-Prometheus-Scrape-Timeout-Seconds": "10",
    }
    request = urllib.request.Request(live_server.url + URL, headers={**headers, "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE  # the classic format, which Prometheus reads
        metrics = parse(response.read().decode())
    assert metrics["mailer_queue_messages"][("alias", "default"), ("priority", "high")] == 1
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(live_server.url + URL, headers=headers), timeout=30)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
