"""Issue 12 item 11 (engine part): a summary counts only what was committed.

A SIGINT that arrives while a batch's outcome is being written (or committed) rolls that batch back:
its messages are still queued and will be sent again. ``send_mail``'s summary of the interrupted run
must not count them as sent.
"""

import logging
import signal

import pytest
from django.core import mail
from django.core.management import call_command

import mailer
from mailer import engine, writes
from mailer.models import Message, MessageLog

pytestmark = pytest.mark.django_db(transaction=True)


def interrupted_at_write(monkeypatch, which):
    """SIGINT (a real one, to this process) while the ``which``-th batch's outcome is written."""
    record = writes.record
    calls = []

    def record_then_sigint(*args):
        calls.append(args)
        record(*args)
        if len(calls) == which:
            signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt here, inside the batch's transaction

    monkeypatch.setattr(writes, "record", record_then_sigint)


def test_sigint_during_the_outcome_write_is_not_counted_as_sent(monkeypatch, settings, caplog):
    settings.MAILER_COMMIT_BATCH_SIZE = 2
    settings.MAILER_COMMIT_INTERVAL = 3600
    for n in range(4):
        mailer.send_mail(f"m{n}", "body", "from@example.com", ["to@example.com"])
    interrupted_at_write(monkeypatch, which=2)
    with caplog.at_level(logging.INFO, logger="mailer"), pytest.raises(KeyboardInterrupt):
        call_command("send_mail")
    # The backend got all four; the second batch was rolled back: two are still queued, two logged.
    assert len(mail.outbox) == 4
    assert Message.objects.count() == 2 and MessageLog.objects.count() == 2
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Sent:")]
    assert line.startswith("Sent: sent 2, deferred 0, skipped 0, failed 0 in "), line
    assert line.endswith("then stopped by KeyboardInterrupt"), line


def test_on_commit_reports_each_committed_batch(settings):
    settings.MAILER_COMMIT_BATCH_SIZE = 2
    settings.MAILER_COMMIT_INTERVAL = 3600
    for n in range(5):
        mailer.send_mail(f"m{n}", "body", "from@example.com", ["to@example.com"])
    seen = []
    result = engine.send_all(on_commit=lambda counts: seen.append(counts.sent))
    assert result.sent == 5
    assert seen == [2, 4, 5]
