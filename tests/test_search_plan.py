"""A search of the log by an exact address reads the index of the log's addresses, on every database (issue 17).

The log is filled with a few thousand entries (their statistics gathered, as after autovacuum); the EXPLAIN of
the query the admin runs for an address must read ``mailer_logrecipient_addr_idx`` and no whole table.
"""

import datetime
import json

import pytest
from django.db import connection
from django.utils import timezone

from mailer.models import PRIORITY_MEDIUM, RESULT_SUCCESS, LogRecipient, MessageLog
from mailer.recipients import ADDRESS_INDEX

# MariaDB's ANALYZE TABLE commits: no test transaction around it.
pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 3000


@pytest.fixture
def big_log():
    """3,000 log entries, each to its own address with a Cc shared by every 100th; statistics gathered."""
    start = timezone.now() - datetime.timedelta(days=1)
    logs = MessageLog.objects.bulk_create(
        MessageLog(
            when_added=start + datetime.timedelta(seconds=n),
            when_attempted=start + datetime.timedelta(seconds=n),
            priority=PRIORITY_MEDIUM,
            result=RESULT_SUCCESS,
            log_message="",
            recipients=f"user{n}@example.com" + (" team@example.com" if n % 100 == 0 else ""),
            subject_text=f"subject {n}",
        )
        for n in range(ROWS)
    )
    if logs[0].pk is None:  # MySQL returns no ids from a bulk insert
        logs = list(MessageLog.objects.order_by("pk"))
    LogRecipient.objects.bulk_create(
        [LogRecipient(log_id=log.pk, address=a) for log in logs for a in log.recipients.split()], batch_size=1000
    )
    with connection.cursor() as cursor:
        for model in (MessageLog, LogRecipient):
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f"ANALYZE TABLE {table}" if connection.vendor == "mysql" else f"ANALYZE {table}")
            if connection.vendor == "mysql":
                cursor.fetchall()


def search_sql(term: str) -> tuple[str, list]:
    """The query the log's search runs for ``term`` (what the admin's change list filters by)."""
    queryset = MessageLog.objects.search(term)
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


def test_the_address_search_reads_the_address_index(big_log):
    assert [log.recipients for log in MessageLog.objects.search("User1234@Example.com")] == ["user1234@example.com"]
    assert MessageLog.objects.search("team@example.com").count() == ROWS // 100
    sql, params = search_sql("user1234@example.com")
    log_table = MessageLog._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            [[plan]] = cursor.fetchall()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            nodes = list(plan_nodes(plan[0]["Plan"]))
            scans = {n.get("Relation Name"): n for n in nodes if "Relation Name" in n}
            shown = json.dumps(plan, indent=1)
            assert scans[LogRecipient._meta.db_table].get("Index Name") == ADDRESS_INDEX, shown
            assert scans[MessageLog._meta.db_table]["Node Type"] in ("Index Scan", "Bitmap Heap Scan"), shown
            assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], shown
        elif connection.vendor == "mysql":
            cursor.execute(f"EXPLAIN {sql}", params)
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            # The subquery on the addresses (aliased) reads the index; each entry it yields is one primary key
            # lookup; the only full read is of the subquery's materialised result, a few rows.
            assert [row["key"] for row in rows if row["table"] not in ("<subquery2>", log_table)] == [ADDRESS_INDEX]
            assert [row["key"] for row in rows if row["table"] == log_table] == ["PRIMARY"], rows
            assert all(row["type"] != "ALL" for row in rows if not row["table"].startswith("<")), rows
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
            assert f"INDEX {ADDRESS_INDEX} (address=?" in plan, plan
            assert f"SCAN {MessageLog._meta.db_table}" not in plan.replace("USING", ""), plan


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)
