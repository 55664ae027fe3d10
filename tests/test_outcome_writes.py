"""Issue 12 item 1: an outcome the log cannot store never puts mail the relay accepted back on the queue.

Rows are written straight into the queue (``serialization.dumps`` of an email whose Message-ID the log
tables cannot hold, or a django-mailer 2.x style base64 pickle), bypassing any queue-time check, as
rows of an older version or of another writer would be. Then three cron runs of ``send_mail`` in child
processes against a real SMTP sink: every message, the bad one, its batch-mates and those behind it,
reaches the relay exactly once, and nothing stays queued.
"""

import json
from collections import Counter

import django
import pytest

from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.project_db import migrated_project, run_in_project, table_counts

QUEUE_ROWS = """
import base64, pickle, uuid
from django.core.mail import EmailMessage
from django.utils.translation import gettext_lazy
from mailer import serialization
from mailer.models import Message

BAD = {{
    "nul": "<bad\\x00id@example.com>",
    "lazy": gettext_lazy("<lazy-id@example.com>"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "emoji": "<\\U0001F600@example.com>",
}}
for seq in range(5):
    headers = {{"X-Test-Seq": str(seq)}}
    if seq == 2:
        headers["Message-ID"] = BAD[{bad!r}]
    email = EmailMessage(f"m{{seq}}", "body", "from@example.com", ["to@example.com"], headers=headers)
    if seq == 2 and {legacy!r}:
        data = base64.encodebytes(pickle.dumps(email, 2)).decode("ascii")
    else:
        data = serialization.dumps(email)
    Message.objects.create(message_data=data, priority=2)
print("queued", Message.objects.count())
"""

UTF8MB3_LOG = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("ALTER TABLE mailer_messagelog CONVERT TO CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci")
"""

CASES = {
    # case: (bad Message-ID, 2.x row?, databases it broke on)
    "nul": ("nul", False, {"postgres"}),
    "lazy": ("lazy", False, {"postgres", "sqlite"}),
    "uuid": ("uuid", False, {"sqlite"}),
    "emoji-utf8mb3": ("emoji", False, {"mysql"}),
    "2x-nul": ("nul", True, {"postgres"}),
    "2x-emoji-utf8mb3": ("emoji", True, {"mysql"}),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_message_id_is_delivered_once_and_its_batch_mates_too(case, tmp_path, smtp_server):
    bad, legacy, vendors = CASES[case]
    if dbconfig.vendor() not in vendors:
        pytest.skip(f"{case} is a {' and '.join(sorted(vendors))} case")
    smtp = {"MAILER_TEST_SMTP_PORT": str(smtp_server.port), "MAILER_TEST_USE_FILE_LOCK": "0"}
    with migrated_project(tmp_path, "mailer_outcome", **smtp) as env:
        if bad == "emoji":
            run_in_project(env, UTF8MB3_LOG)
        assert "queued 5" in run_in_project(env, QUEUE_ROWS.format(bad=bad, legacy=legacy))
        runs = [manage("send_mail", env=env) for _ in range(3)]
        copies = Counter(int(r.message["X-Test-Seq"]) for r in smtp_server.messages)
        counts = table_counts(env)
        if bad == "emoji" and django.VERSION >= (6, 1):
            # Django 6.1 cannot put a non-ASCII Message-ID on the wire (UnicodeEncodeError): the message is
            # put aside (deferred, with the traceback) by the first run, which says so with its exit status;
            # its batch-mates and the messages behind it go out once, and nothing is sent again.
            assert copies == {0: 1, 1: 1, 3: 1, 4: 1}, copies
            assert [run.returncode != 0 for run in runs] == [True, False, False], runs[0].stderr
            assert counts["queued"] == 1 and counts["logs"]["1"] == 4 and counts["logs"]["3"] == 1, counts
            return
        assert copies == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}, copies
        assert [run.returncode for run in runs] == [0, 0, 0], runs[0].stderr
        assert counts["queued"] == 0, counts
        assert counts["logs"]["1"] == 5, counts
        if case.startswith("2x"):
            return
        # The bad message's own row says what could not be kept.
        [row] = json.loads(
            run_in_project(
                env,
                "import json\nfrom mailer.models import MessageLog\n"
                "print(json.dumps([(m.message_id, m.log_message) for m in MessageLog.objects.all()"
                " if 'm2' in (m.email.subject if m.email else 'm2')]))",
            )
            .strip()
            .splitlines()[-1]
        )
        message_id, log_message = row
        if bad == "emoji":  # utf8mb3 cannot hold it: logged without it, saying why
            assert message_id is None and "Message-ID and message data could not be logged" in log_message, row
        else:  # stored as plain text, NUL removed
            expected = {"nul": "<badid@example.com>", "lazy": "<lazy-id@example.com>"}
            assert message_id == expected.get(bad, "12345678-1234-5678-1234-567812345678"), row


@pytest.mark.django_db(transaction=True)
def test_a_log_row_the_database_refuses_outright_defers_its_message_and_keeps_the_rest(settings):
    """Worst case: the table refuses the row even without its Message-ID and data (here a trigger refuses
    every low-priority row). The message is deferred, not left queued to be sent again; the others are logged."""
    if dbconfig.vendor() != "sqlite":
        pytest.skip("the refusing trigger is written for SQLite")
    from django.core import mail
    from django.db import connection

    import mailer
    from mailer.engine import send_all
    from mailer.models import PRIORITY_DEFERRED, PRIORITY_LOW, PRIORITY_MEDIUM, Message, MessageLog

    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER refuse_low BEFORE INSERT ON mailer_messagelog WHEN NEW.priority = 3 "
            "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
        )
    try:
        mailer.send_mail("a", "body", "from@example.com", ["to@example.com"], priority=PRIORITY_MEDIUM)
        mailer.send_mail("b", "body", "from@example.com", ["to@example.com"], priority=PRIORITY_LOW)
        mailer.send_mail("c", "body", "from@example.com", ["to@example.com"], priority=PRIORITY_MEDIUM)
        result = send_all()
        assert result.sent == 3
        assert sorted(m.subject for m in mail.outbox) == ["a", "b", "c"]
        assert list(Message.objects.values_list("priority", flat=True)) == [PRIORITY_DEFERRED]
        assert sorted(log.email.subject for log in MessageLog.objects.all()) == ["a", "c"]
        # The next run does not send it again.
        assert send_all().sent == 0
        assert len(mail.outbox) == 3
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_low")
