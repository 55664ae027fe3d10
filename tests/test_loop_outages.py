"""runmailer when its database goes away: it backs off and carries on (only ImproperlyConfigured stops it).

A private PostgreSQL cluster (tests/support/pgcluster.py) is stopped for a few seconds under a running
``runmailer`` child, started again, and a message queued: the same process must send it.
"""

from __future__ import annotations

import time
from contextlib import closing

import pytest

from tests.support import dbconfig
from tests.support.pgcluster import private_cluster
from tests.support.procs import manage
from tests.support.queueing import email_data, insert_rows
from tests.support.senders import SenderProcess
from tests.support.waiting import wait_until

postgres_run = pytest.mark.skipif(
    dbconfig.vendor() != "postgres", reason="needs a private PostgreSQL cluster: runs with MAILER_TEST_DB=postgres"
)


def logged(cluster) -> int:
    """How many log rows the sender has committed (its outcome is on disk, not only at the relay)."""
    with closing(cluster.connect()) as conn, closing(conn.cursor()) as cursor:
        cursor.execute("SELECT count(*) FROM mailer_messagelog")
        return cursor.fetchone()[0]


@postgres_run
def test_runmailer_survives_the_database_going_away(smtp_server, tmp_path):
    with private_cluster() as cluster:
        env = {
            **cluster.env(),
            "MAILER_TEST_SMTP_PORT": smtp_server.port,
            "MAILER_TEST_USE_FILE_LOCK": "0",
            "MAILER_TEST_EMPTY_QUEUE_SLEEP": "0.2",
        }
        result = manage("migrate", "-v0", env=env)
        assert result.returncode == 0, result.stderr
        child = SenderProcess("runmailer", env, tmp_path / "runmailer.log")
        try:
            insert_rows(cluster.connect, email_data("before"))
            smtp_server.wait_for(1, timeout=10)
            # The relay has the mail before the sender has recorded it; stopping the database in between is
            # the documented "at most one resend" case, not the outage this test is about.
            wait_until(lambda: logged(cluster) == 1, timeout=10, message="'before' was never logged")

            cluster.stop("fast")
            time.sleep(3)  # several queue checks fail meanwhile (one every 0.2 s)
            assert child.alive(), f"runmailer exited ({child.proc.returncode}) with the database down:\n{child.log()}"
            cluster.start()

            insert_rows(cluster.connect, email_data("after"))
            received = smtp_server.wait_for(2, timeout=20)
            assert [m.message["Subject"] for m in received] == ["before", "after"]
            assert child.alive(), child.log()
            assert child.stop() == 0, child.log()
        finally:
            child.kill()
            print(child.log())
