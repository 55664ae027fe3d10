"""Several ``send_mail`` processes on one queue share it, and a killed one loses nothing.

Real processes, a real database server and a real SMTP server: every message delivered once, none lost;
after ``SIGKILL``, no more messages delivered twice than ``docs/guarantees.rst`` allows. Runs whatever
``MAILER_TEST_DB`` is: the processes use a fresh database of their own, not the test database.
Each case runs in the run of its own server (``MAILER_TEST_DB=postgres`` or ``mysql``), once per invocation
of ``runtests.py --db all`` instead of once per database of it.
"""

import json
import re
import signal
import warnings
from collections import Counter
from contextlib import closing, contextmanager

import pytest

from tests.support import dbconfig, services
from tests.support.procs import manage, popen_manage
from tests.support.smtp_sink import slow_down
from tests.support.waiting import wait_until

QUEUE = """
from django.core.mail import EmailMessage
from mailer.backend import DbBackend
emails = [
    EmailMessage(f"seq {{n}}", "body", "from@example.com", ["to@example.com"], headers={{"X-Test-Seq": str(n)}})
    for n in range({count})
]
print("queued", DbBackend().send_messages(emails))
"""

SUMMARY = re.compile(r"mailer\.engine: Sent: sent (\d+), deferred (\d+), skipped (\d+), failed (\d+)")


def postgres_counts(name):
    with closing(services.pg_connect(name)) as conn, closing(conn.cursor()) as cursor:
        return _counts(cursor)


def mysql_counts(name):
    with closing(services.mysql_connect()) as conn, closing(conn.cursor()) as cursor:
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


@contextmanager
def queue_in_fresh_database(db, count):
    """A fresh, migrated database of ``db`` with ``count`` messages queued (header X-Test-Seq: 0..count-1).

    Yields the child-process env for it and a function returning (queued, {result: (logs, distinct ids)}).
    """
    fresh_database, counts = DATABASES[db]
    with fresh_database() as name:
        env = {"MAILER_TEST_DB": db, "MAILER_TEST_DB_NAME": name}
        done = manage("migrate", "--no-input", env=env)
        assert done.returncode == 0, done.stderr
        done = manage("shell", "-c", QUEUE.format(count=count), env=env)
        assert done.returncode == 0, done.stderr
        assert f"queued {count}" in done.stdout
        assert counts(name) == (count, {})
        yield env, lambda: counts(name)


def own_run(db):
    """Skips a case on ``db`` unless the suite runs on that server."""
    reason = f"children on a {db} database of their own: runs with MAILER_TEST_DB={db}"
    return pytest.mark.skipif(dbconfig.vendor() != db, reason=reason)


def deliveries(smtp_server):
    return Counter(int(r.message["X-Test-Seq"]) for r in smtp_server.messages)


def finish(procs, timeout=300):
    """Wait for every process; (returncode, stderr) of each. Kills them all if one hangs."""
    outputs = []
    try:
        for proc in procs:
            _out, err = proc.communicate(timeout=timeout)
            outputs.append((proc.returncode, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


@pytest.mark.parametrize(
    "db, senders, count",
    [
        pytest.param(db, senders, count, marks=own_run(db), id=f"{db}-{senders}x{count}")
        for db, senders, count in [("postgres", 2, 500), ("mysql", 2, 500), ("postgres", 4, 2000), ("mysql", 4, 2000)]
    ],
)
def test_senders_share_the_queue_without_duplicates_or_loss(db, senders, count, slow_smtp_server, record_property):
    smtp_server = slow_smtp_server
    with queue_in_fresh_database(db, count) as (env, counts):
        sender_env = {**env, "MAILER_TEST_USE_FILE_LOCK": "0", "MAILER_TEST_SMTP_PORT": smtp_server.port}
        outputs = finish([popen_manage("send_mail", env=sender_env) for _ in range(senders)])
        for returncode, err in outputs:
            assert returncode == 0, err

        seqs = deliveries(smtp_server)
        duplicates = {seq: n for seq, n in seqs.items() if n > 1}
        assert not duplicates, f"delivered more than once: {duplicates}"
        assert set(seqs) == set(range(count))
        assert len(smtp_server.messages) == count

        queued, logs = counts()
        assert queued == 0
        assert logs == {"1": (count, count)}  # RESULT_SUCCESS, each with its own Message-ID

        per_sender = []
        for _returncode, err in outputs:
            found = SUMMARY.findall(err)
            assert len(found) == 1, err
            per_sender.append(tuple(map(int, found[0])))
        assert sum(sent for sent, *_ in per_sender) == count
        assert all(tuple(rest) == (0, 0, 0) for _sent, *rest in per_sender)
        sent = [s for s, *_ in per_sender]
        record_property("sent_per_sender", sent)
        if count > 1000:
            # Long enough for every sender to start while work remains. One sender sending everything means
            # its claims locked rows it did not return (as InnoDB does when it scans instead of using the index).
            assert sum(1 for n in sent if n) >= 2, f"{db}: the queue was not shared: {sent}"
        if min(sent) == 0:
            warnings.warn(f"{db}: a sender sent nothing ({sent}): the queue was not shared this time", stacklevel=1)


@pytest.mark.parametrize("db", [pytest.param(db, marks=own_run(db), id=db) for db in ("postgres", "mysql")])
def test_a_sender_killed_mid_run_loses_nothing_and_resends_within_the_bound(
    db, slow_smtp_server, record_property, tmp_path
):
    """SIGKILL in the middle of a run, then another run: every message delivered, few twice.

    docs/guarantees.rst: at most MAILER_COMMIT_BATCH_SIZE (100) messages can go twice, in practice those
    handed to the backend within MAILER_COMMIT_INTERVAL (20 ms): a few, with a relay taking 4 ms each.
    """
    smtp_server = slow_smtp_server
    count = 600
    with queue_in_fresh_database(db, count) as (env, counts):
        # The killed sender leaves its lock (and lockfile's temporary file) behind: not in the repository.
        sender_env = {**env, "MAILER_TEST_SMTP_PORT": smtp_server.port, "MAILER_TEST_LOCK_PATH": tmp_path / "lock"}
        first = popen_manage("send_mail", env=sender_env)

        def got_going():
            if len(smtp_server.messages) >= count // 3:
                return True
            assert first.poll() is None, "the first sender did not get going"
            return False

        wait_until(got_going, 60, interval=0.01, message="the first sender did not get going")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        killed_at = len(smtp_server.messages)
        assert killed_at < count, "the first sender finished before it was killed"

        [(returncode, err)] = finish([popen_manage("send_mail", env=sender_env)])
        assert returncode == 0, err

        seqs = deliveries(smtp_server)
        assert set(seqs) == set(range(count)), "lost messages"
        twice = sorted(seq for seq, n in seqs.items() if n > 1)
        assert all(seqs[seq] == 2 for seq in twice)
        assert len(twice) <= 100, twice  # MAILER_COMMIT_BATCH_SIZE: the hard bound
        record_property("delivered_before_kill", killed_at)
        record_property("delivered_twice", len(twice))
        queued, logs = counts()
        assert queued == 0
        assert logs == {"1": (count, count)}  # one success row per message: the killed run's were rolled back


POISON = """
from django.core.mail import EmailMessage
from mailer.models import PRIORITY_HIGH, Message, email_to_db
# An address the SMTP backend refuses when sending ("a@b@c"), stored the way an older version or a
# third-party tool could have stored it: past today's queue-time checks.
poison = EmailMessage("poison", "body", "from@example.com", ["a@b@c"])
Message.objects.create(message_data=email_to_db(poison), priority=PRIORITY_HIGH)
"""


@pytest.mark.parametrize("db", [pytest.param(db, marks=own_run(db), id=db) for db in ("postgres", "mysql")])
def test_a_poison_message_at_the_head_does_not_block_the_queue(db, smtp_server, tmp_path):
    with queue_in_fresh_database(db, 50) as (env, counts):
        done = manage("shell", "-c", POISON, env=env)
        assert done.returncode == 0, done.stderr
        sender_env = {**env, "MAILER_TEST_SMTP_PORT": smtp_server.port, "MAILER_TEST_LOCK_PATH": tmp_path / "lock"}

        first = manage("send_mail", env=sender_env)
        assert first.returncode != 0  # the documented re-raise still reaches cron
        assert "Invalid address" in first.stderr
        second = manage("send_mail", env=sender_env)
        assert second.returncode == 0, second.stderr

        assert deliveries(smtp_server) == Counter(range(50))
        queued, logs = counts()
        assert queued == 1  # the poison message, deferred
        assert logs == {"1": (50, 50), "3": (1, 1)}
        failure = failure_row(db, env["MAILER_TEST_DB_NAME"])
        assert failure[0] == 4  # PRIORITY_DEFERRED
        assert "Traceback" in failure[1] and "Invalid address" in failure[1]


def failure_row(db, name):
    """(priority of the queued message, log_message of the failure row)."""
    sql = "SELECT m.priority, l.log_message FROM mailer_message m, mailer_messagelog l WHERE l.result = '3'"
    if db == "postgres":
        with closing(services.pg_connect(name)) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(sql)
            return cursor.fetchone()
    with closing(services.mysql_connect()) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(f"USE `{name}`")
        cursor.execute(sql)
        return cursor.fetchone()


@pytest.mark.skipif(
    dbconfig.vendor() != "postgres",
    reason="children on a postgres database of their own: runs with MAILER_TEST_DB=postgres",
)
def test_a_sender_with_four_connections_killed_mid_run_leaves_its_leased_messages_for_after_the_lease(
    smtp_server, tmp_path
):
    """SIGKILL a sender whose deliveries go on across commits (``mailer.leases``): the messages it had leased
    (one per connection at most) stay queued, not due, so the next run leaves them alone; once their lease has
    run out (here: made due by hand) they go out, and nothing is lost. PostgreSQL only: the leases are the same
    SQL on every database, and the test is a few seconds of processes."""
    slow_down(smtp_server, 0.05)  # longer than MAILER_COMMIT_INTERVAL: every commit has deliveries under way
    count = 200
    with queue_in_fresh_database("postgres", count) as (env, counts):
        sender_env = {
            **env,
            "MAILER_TEST_SMTP_PORT": smtp_server.port,
            "MAILER_TEST_LOCK_PATH": tmp_path / "lock",
            "MAILER_TEST_SETTINGS": json.dumps({"MAILER_SENDER_CONNECTIONS": 4, "MAILER_LEASE_DELIVERIES": True}),
        }
        first = popen_manage("send_mail", env=sender_env)
        wait_until(lambda: len(smtp_server.messages) >= count // 3, 60, interval=0.005, message="no start")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        assert len(smtp_server.messages) < count, "the first sender finished before it was killed"

        [(returncode, err)] = finish([popen_manage("send_mail", env=sender_env)])
        assert returncode == 0, err
        with closing(services.pg_connect(env["MAILER_TEST_DB_NAME"])) as conn, closing(conn.cursor()) as cursor:
            cursor.execute("SELECT count(*) FROM mailer_message WHERE not_before > now() + interval '5 minutes'")
            [(leased,)] = cursor.fetchall()
            assert counts()[0] == leased and 1 <= leased <= 4  # only the leased ones are left, not due for minutes
            cursor.execute("UPDATE mailer_message SET not_before = NULL")  # as if their lease had run out
            conn.commit()
        [(returncode, err)] = finish([popen_manage("send_mail", env=sender_env)])
        assert returncode == 0, err

        seqs = deliveries(smtp_server)
        assert set(seqs) == set(range(count)), "lost messages"
        assert all(n <= 2 for n in seqs.values()) and sum(n == 2 for n in seqs.values()) <= 100
        queued, logs = counts()
        assert queued == 0 and logs == {"1": (count, count)}
