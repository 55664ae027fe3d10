"""The claim stays one index-backed query with the "not before" condition (issue 14), on the real servers.

The SQL is the one ``send_all()`` runs, captured as it runs, over a queue of a few thousand rows of which some wait
for a retry (``not_before`` ahead) and some are deferred; the server's EXPLAIN must read the queue index in send
order: no sort of the queue, whatever the share of waiting rows. The same holds for the claims that leave out the
messages of relays at their rate limit or paused (issue 15: ``mailers``, "only" or "except" some aliases).
"""

import datetime
import json

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailer import claims
from mailer.engine import send_all
from mailer.models import PRIORITY_DEFERRED, QUEUE_INDEX, Message
from tests.support import dbconfig
from tests.support.queueing import email_data

pytestmark = [
    pytest.mark.skipif(
        dbconfig.vendor() == "sqlite",
        reason="SQLite has no SKIP LOCKED claim and one writer at a time: the plan matters on the servers only",
    ),
    # MariaDB's ANALYZE TABLE commits: no test transaction around it.
    pytest.mark.django_db(transaction=True),
]

ROWS = 3000


@pytest.fixture
def big_queue():
    """3,000 queued rows in the three priorities; every 7th waits for a retry, every 50th is deferred."""
    return fill_queue()


@pytest.fixture
def queue_with_bulk():
    """The queue of ``big_queue``, every 5th row queued through the ``MAILERS`` alias "bulk"."""
    return fill_queue(bulk_every=5)


def fill_queue(bulk_every: int | None = None) -> list[Message]:
    data = email_data("plan")
    now = timezone.now()
    later = now + datetime.timedelta(hours=1)
    rows = []
    for n in range(ROWS):
        waiting = n % 7 == 0
        rows.append(
            Message(
                message_data=data,
                priority=PRIORITY_DEFERRED if n % 50 == 1 else 1 + n % 3,
                when_added=now - datetime.timedelta(seconds=ROWS - n),
                not_before=later if waiting else None,
                attempts=1 if waiting else 0,
                mailer="bulk" if bulk_every and n % bulk_every == 0 else None,
            )
        )
    Message.objects.bulk_create(rows, batch_size=500)
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:  # statistics as after autovacuum, not those of an empty table
        cursor.execute(f"ANALYZE TABLE {table}" if connection.vendor == "mysql" else f"ANALYZE {table}")
        if connection.vendor == "mysql":
            cursor.fetchall()
    return rows


def claim_sql(settings) -> str:
    """The SQL of the first claim of a ``send_all()`` pass, as the server got it."""
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
    settings.MAILER_EMAIL_MAX_BATCH = 3  # the first claim is what is looked at: no need to send 3,000
    with CaptureQueriesContext(connection) as captured:
        assert send_all().sent == 3
    table = Message._meta.db_table
    claims = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and "FOR UPDATE" in q["sql"] and table in q["sql"]
    ]
    assert claims, [q["sql"] for q in captured.captured_queries]
    assert "not_before" in claims[0]
    return claims[0]


MAILERS = [("except", frozenset({"bulk"})), ("only", frozenset({"bulk"}))]


def filtered_claim_sql(mailers: claims.Mailers) -> str:
    """The SQL of a claim of 3 messages that takes only some mailers' messages (or all but some), as a pass
    whose pacer leaves out relays at their limit runs it; checks what it claimed."""
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        claimed = claims.Claimer(None, connection.alias)(3, None, mailers)
    which, aliases = mailers
    assert len(claimed) == 3 and all((m.mailer in aliases) == (which == "only") for m in claimed), claimed
    [sql] = [q["sql"] for q in captured.captured_queries if "FOR UPDATE" in q["sql"]]
    assert "not_before" in sql and "mailer" in sql, sql
    return sql


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


@pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="the PostgreSQL plan")
def test_postgres_claim_reads_the_queue_index_in_order_without_a_sort(settings, big_queue):
    assert_postgres_reads_the_queue_index_in_order(claim_sql(settings))


@pytest.mark.skipif(dbconfig.vendor() != "postgres", reason="the PostgreSQL plan")
@pytest.mark.parametrize("mailers", MAILERS, ids=lambda m: m[0])
def test_postgres_claim_of_some_mailers_reads_the_queue_index_in_order_without_a_sort(queue_with_bulk, mailers):
    assert_postgres_reads_the_queue_index_in_order(filtered_claim_sql(mailers), "mailer")


def assert_postgres_reads_the_queue_index_in_order(sql: str, *filtered: str) -> None:
    """EXPLAIN ``sql``: one scan of the queue, by its index, forward, no sort; the due condition (and the
    columns ``filtered``) a filter on the rows the index yields."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        [[plan]] = cursor.fetchall()
    if isinstance(plan, str):
        plan = json.loads(plan)
    nodes = list(plan_nodes(plan[0]["Plan"]))
    queue_scans = [n for n in nodes if n.get("Relation Name") == Message._meta.db_table]
    assert [n.get("Index Name") for n in queue_scans] == [QUEUE_INDEX], json.dumps(plan, indent=1)
    assert queue_scans[0]["Node Type"] in ("Index Scan", "Index Only Scan")
    assert queue_scans[0].get("Scan Direction", "Forward") == "Forward"
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], json.dumps(plan, indent=1)
    # The due condition is a filter on the rows the index yields, not a second pass over the table.
    for column in ("not_before", *filtered):
        assert column in queue_scans[0].get("Filter", ""), json.dumps(plan, indent=1)


@pytest.mark.skipif(dbconfig.vendor() != "mysql", reason="the MariaDB/MySQL plan")
def test_mariadb_claim_reads_the_queue_index_without_filesort(settings, big_queue):
    assert_mariadb_reads_the_queue_index_without_filesort(claim_sql(settings))


@pytest.mark.skipif(dbconfig.vendor() != "mysql", reason="the MariaDB/MySQL plan")
@pytest.mark.parametrize("mailers", MAILERS, ids=lambda m: m[0])
def test_mariadb_claim_of_some_mailers_reads_the_queue_index_without_filesort(queue_with_bulk, mailers):
    assert_mariadb_reads_the_queue_index_without_filesort(filtered_claim_sql(mailers))


def assert_mariadb_reads_the_queue_index_without_filesort(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        columns = [c[0].lower() for c in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    queue_rows = [r for r in rows if r["table"] == Message._meta.db_table]
    assert [r["key"] for r in queue_rows] == [QUEUE_INDEX], rows
    assert all("filesort" not in (r["extra"] or "").lower() for r in rows), rows
    assert all("temporary" not in (r["extra"] or "").lower() for r in queue_rows), rows


def test_the_claim_skips_waiting_and_deferred_rows(settings, big_queue):
    """What the plan is for: the first claim takes the oldest due rows of the highest priority."""
    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
    settings.MAILER_EMAIL_MAX_BATCH = 3
    expected = [
        m.when_added
        for m in sorted(big_queue, key=lambda m: (m.priority, m.when_added))
        if m.not_before is None and m.priority != PRIORITY_DEFERRED
    ][:3]
    assert send_all().sent == 3
    left = set(Message.objects.values_list("when_added", flat=True))
    assert not left & set(expected)
    assert len(left) == ROWS - 3
