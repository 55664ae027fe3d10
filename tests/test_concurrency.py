"""Two ``send_mail`` processes on one queue share it: every message delivered once, none lost.

Real processes, a real database server and a real SMTP server. Runs whatever ``MAILER_TEST_DB`` is: the
processes use a fresh database of their own, not the test database.
"""

import re
import warnings
from collections import Counter
from contextlib import closing

import pytest

from tests import services
from tests.procs import manage, popen_manage

COUNT = 500

QUEUE = f"""
from django.core.mail import EmailMessage
from mailer.backend import DbBackend
emails = [
    EmailMessage(f"seq {{n}}", "body", "from@example.com", ["to@example.com"], headers={{"X-Test-Seq": str(n)}})
    for n in range({COUNT})
]
print("queued", DbBackend().send_messages(emails))
"""

SUMMARY = re.compile(r"mailer\.engine: Sent: sent (\d+), deferred (\d+), skipped (\d+), failed (\d+)")


def postgres_counts(name):
    with closing(services._pg_connect(name)) as conn, closing(conn.cursor()) as cursor:
        return _counts(cursor)


def mysql_counts(name):
    with closing(services._mysql_connect()) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(f"USE `{name}`")
        return _counts(cursor)


def _counts(cursor):
    cursor.execute("SELECT count(*) FROM mailer_message")
    queued = cursor.fetchone()[0]
    cursor.execute("SELECT result, count(*), count(DISTINCT message_id) FROM mailer_messagelog GROUP BY result")
    logs = {str(result): (total, distinct) for result, total, distinct in cursor.fetchall()}
    return queued, logs


DATABASES = {
    "postgres": (services.fresh_postgres_database, postgres_counts),
    "mysql": (services.fresh_mysql_database, mysql_counts),
}


@pytest.mark.parametrize("db", ["postgres", "mysql"])
def test_two_senders_share_the_queue_without_duplicates_or_loss(db, slow_smtp_server, record_property):
    smtp_server = slow_smtp_server
    fresh_database, counts = DATABASES[db]
    with fresh_database() as name:
        env = {"MAILER_TEST_DB": db, "MAILER_TEST_DB_NAME": name}
        done = manage("migrate", "--no-input", env=env)
        assert done.returncode == 0, done.stderr
        done = manage("shell", "-c", QUEUE, env=env)
        assert done.returncode == 0, done.stderr
        assert f"queued {COUNT}" in done.stdout
        assert counts(name) == (COUNT, {})

        sender_env = {**env, "MAILER_TEST_USE_FILE_LOCK": "0", "MAILER_TEST_SMTP_PORT": smtp_server.port}
        senders = [popen_manage("send_mail", env=sender_env) for _ in range(2)]
        outputs = []
        try:
            for proc in senders:
                outputs.append(proc.communicate(timeout=120))
        finally:
            for proc in senders:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        for proc, (_out, err) in zip(senders, outputs, strict=True):
            assert proc.returncode == 0, err

        received = smtp_server.messages
        seqs = Counter(r.message["X-Test-Seq"] for r in received)
        duplicates = {seq: n for seq, n in seqs.items() if n > 1}
        assert not duplicates, f"delivered more than once: {duplicates}"
        assert set(seqs) == {str(n) for n in range(COUNT)}
        assert len(received) == COUNT

        queued, logs = counts(name)
        assert queued == 0
        assert logs == {"1": (COUNT, COUNT)}  # RESULT_SUCCESS, each with its own Message-ID

        per_sender = []
        for _out, err in outputs:
            found = SUMMARY.findall(err)
            assert len(found) == 1, err
            per_sender.append(tuple(map(int, found[0])))
        assert sum(sent for sent, *_ in per_sender) == COUNT
        assert all(tuple(rest) == (0, 0, 0) for _sent, *rest in per_sender)
        sent = [s for s, *_ in per_sender]
        record_property("sent_per_sender", sent)
        if min(sent) == 0:
            warnings.warn(
                f"{db}: one sender sent everything ({sent}): the queue was not shared this time", stacklevel=1
            )
