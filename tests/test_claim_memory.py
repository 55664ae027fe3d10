"""Issue 12 item 7: a sender's memory does not grow with the size of the mail it claims.

30 messages with a 5 MiB attachment each, sent by a real ``send_mail`` child process; its peak resident
memory is compared with a generous bound. Decoding a whole claim before sending its first message took
460 MiB here; a run with small messages takes about 60 MiB.
"""

import datetime

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.utils import timezone

from mailer import claims, engine, outcomes, serialization, writes
from mailer.models import RESULT_DONT_SEND, RESULT_FAILURE, DontSendEntry, Message, MessageLog
from tests.support.procs import manage_peak_rss
from tests.support.project_db import migrated_project, run_in_project, table_counts

QUEUE_BIG = """
import os
from django.core.mail import EmailMessage
for n in range(30):
    email = EmailMessage(f"big {n}", "body", "from@example.com", ["to@example.com"])
    email.attach(f"big{n}.bin", os.urandom(5 * 1024 * 1024), "application/octet-stream")
    email.send()
print("queued")
"""

PEAK_BOUND_MIB = 160


def test_thirty_5_mib_messages_are_sent_in_bounded_memory(tmp_path):
    with migrated_project(tmp_path, "mailer_memory") as env:  # the dummy backend: the cost is the sender's
        run_in_project(env, QUEUE_BIG)
        done, peak_kib = manage_peak_rss("send_mail", env=env)
        assert done.returncode == 0, done.stderr
        assert table_counts(env) == {"queued": 0, "deferred": 0, "logs": {"1": 30, "2": 0, "3": 0}}
        print(f"send_mail peak RSS: {peak_kib / 1024:.0f} MiB")
        assert peak_kib / 1024 < PEAK_BOUND_MIB, f"{peak_kib / 1024:.0f} MiB"


@pytest.mark.django_db
def test_big_messages_read_at_their_turn_keep_order_and_every_outcome(settings, monkeypatch):
    """Messages over the inline threshold, mixed with small ones: sent in order; blocked, corrupt and held
    back big rows get the same treatment as small ones; the batch commits when its log data passes the budget."""
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    monkeypatch.setattr(outcomes, "LOG_BYTES_PER_COMMIT", 1)  # commit after every message that logs data
    commits = []
    record = writes.record
    monkeypatch.setattr(writes, "record", lambda logs, *args: (commits.append(len(logs)), record(logs, *args)))
    big = b"x" * (claims.INLINE_DATA_BYTES + 1)
    start = timezone.now()

    def add(subject, to="to@example.com", data=None, attach=False):
        email = EmailMessage(subject, "body", "from@example.com", [to])
        if attach:
            email.attach("big.bin", big, "application/octet-stream")
        row = Message.objects.create(message_data=data or serialization.dumps(email))
        Message.objects.filter(pk=row.pk).update(when_added=start + datetime.timedelta(seconds=row.pk))
        return row

    DontSendEntry.objects.create(to_address="blocked@example.com")
    add("s0")
    add("b1", attach=True)
    add("s2")
    add("b3", to="blocked@example.com", attach=True)
    corrupt = add("b4", data="~" * (claims.INLINE_DATA_BYTES + 10))
    settings.SECRET_KEY = "another key " * 5
    held = add("b5", attach=True)
    settings.SECRET_KEY = "django-mailer-tests-not-secret"
    add("s6")

    result = engine.send_all()

    assert [m.subject for m in mail.outbox] == ["s0", "b1", "s2", "s6"]
    assert [len(m.attachments) for m in mail.outbox] == [0, 1, 0, 0]
    assert (result.sent, result.skipped, result.failed, result.held) == (4, 1, 1, 1)
    assert list(Message.objects.values_list("pk", flat=True)) == [held.pk]
    assert MessageLog.objects.get(result=RESULT_DONT_SEND).email.subject == "b3"
    assert MessageLog.objects.get(result=RESULT_FAILURE).message_data == corrupt.message_data
    assert len(commits) > 2  # the budget made the claim commit early, and the rest was claimed again
