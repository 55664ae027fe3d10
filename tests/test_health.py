"""``mailer.status.problems()``: the health verdict of ``mailer_status --max-age/--max-deferred``, from Python."""

import datetime

import pytest
from django.utils import timezone

import mailer
from mailer.models import PRIORITY_DEFERRED, PRIORITY_HIGH
from mailer.status import QueueStatus, ResultCounts, problems, queue_status, short_duration
from tests.support.queueing import queue

NOW = timezone.now().replace(microsecond=0)


def status(oldest_age=None, deferred=0):
    """A QueueStatus with the oldest waiting message ``oldest_age`` seconds old and ``deferred`` deferred."""
    oldest = None if oldest_age is None else NOW - datetime.timedelta(seconds=oldest_age)
    return QueueStatus(
        checked_at=NOW,
        high=0,
        medium=0 if oldest is None else 1,
        low=0,
        deferred=deferred,
        oldest_queued=oldest,
        last_hour=ResultCounts(),
        last_day=ResultCounts(),
        last_success=None,
    )


@pytest.mark.django_db
def test_a_healthy_queue_has_no_problems():
    assert problems(status()) == []
    assert problems(status(oldest_age=10**6, deferred=10**6)) == []  # no limit given, nothing checked
    assert problems(status(oldest_age=600, deferred=5), max_age=600, max_deferred=5) == []


@pytest.mark.django_db
def test_each_limit_passed_is_one_problem():
    found = problems(status(oldest_age=930.44, deferred=57), max_age=600, max_deferred=50)
    assert found == [
        "the oldest queued message has waited 930.4s (15m 30s), longer than --max-age 600; is a sender running?",
        "57 message(s) deferred, more than --max-deferred 50",
    ]


@pytest.mark.django_db
def test_mail_this_process_cannot_decode_is_a_problem_only_when_a_limit_is_checked(settings):
    key = settings.SECRET_KEY
    settings.SECRET_KEY = "another key " * 5
    mailer.send_mail("held", "body", "from@example.com", ["to@example.com"])
    settings.SECRET_KEY = key
    queue("corrupt rows are the sender's business", data="not a message")
    now = queue_status()
    assert problems(now) == []
    [problem] = problems(now, max_deferred=0)
    assert problem.startswith("message ") and "cannot be decoded by this configuration" in problem


@pytest.mark.django_db
def test_from_the_database():
    queue(priority=PRIORITY_HIGH, added=timezone.now() - datetime.timedelta(hours=2), data="not decoded here")
    queue(priority=PRIORITY_DEFERRED, data="not decoded either")
    assert len(problems(queue_status(), max_age=3600, max_deferred=0)) == 2


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (45.9, "45s"),
        (725, "12m 5s"),
        (3 * 3600 + 20 * 60 + 7, "3h 20m"),
        (2 * 86400 + 4 * 3600 + 59, "2d 4h"),
    ],
)
def test_short_duration(seconds, text):
    assert short_duration(seconds) == text
