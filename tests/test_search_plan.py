"""A search of the log by an exact address reads the index of the log's addresses, on every database (issue 17).

The log is filled with a few thousand entries (their statistics gathered, as after autovacuum); the EXPLAIN of
the query the admin runs for an address must read the index of the entries' first address
(``mailer_log_recipient_idx``) and that of their other addresses (``mailer_logrecipient_addr_idx``), and no
whole table.
"""

import datetime
import json

import pytest
from django.db import connection
from django.utils import timezone

from mailer.models import PRIORITY_MEDIUM, RESULT_SUCCESS, LogRecipient, MessageLog
from mailer.recipients import ADDRESS_INDEX
from mailer.searchcols import RECIPIENT_INDEX

# MariaDB's ANALYZE TABLE commits: no test transaction around it.
pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 3000


@pytest.fixture
def big_log():
    """3,000 log entries, each to its own address, every third with a Cc of its own, every 100th with a Cc shared
    by them; statistics gathered."""
    start = timezone.now() - datetime.timedelta(days=1)
    logs = MessageLog.objects.bulk_create(
        MessageLog(
            when_added=start + datetime.timedelta(seconds=n),
            when_attempted=start + datetime.timedelta(seconds=n),
            priority=PRIORITY_MEDIUM,
            result=RESULT_SUCCESS,
            log_message="",
            recipient=f"user{n}@example.com",
            recipients=f"user{n}@example.com"
            + (f" cc{n}@example.com" if n % 3 == 1 else "")
            + (" team@example.com" if n % 100 == 0 else ""),
            subject_text=f"subject {n}",
        )
        for n in range(ROWS)
    )
    if logs[0].pk is None:  # MySQL returns no ids from a bulk insert
        logs = list(MessageLog.objects.order_by("pk"))
    LogRecipient.objects.bulk_create(
        [LogRecipient(log_id=log.pk, address=a) for log in logs for a in log.recipients.split()[1:]], batch_size=1000
    )
    with connection.cursor() as cursor:
        for model in (MessageLog, LogRecipient):
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f"ANALYZE TABLE {table}" if connection.vendor == "mysql" else f"ANALYZE {table}")
            if connection.vendor == "mysql":
                cursor.fetchall()


def search_sql(term: str) -> tuple[str, list]:
    """The query the log's search runs for ``term`` (what the admin's change list filters by), first page."""
    queryset = MessageLog.objects.search(term).order_by("-pk")[:100]
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


@pytest.mark.parametrize("address", ["user1234@example.com", "cc1234@example.com"], ids=["first", "other"])
def test_the_address_search_reads_the_address_indexes(big_log, address):
    assert [log.recipients for log in MessageLog.objects.search("User1234@Example.com")] == [
        "user1234@example.com cc1234@example.com"
    ]
    assert [log.recipient for log in MessageLog.objects.search("CC1234@example.com")] == ["user1234@example.com"]
    assert MessageLog.objects.search("team@example.com").count() == ROWS // 100
    sql, params = search_sql(address)
    log_table, link_table = MessageLog._meta.db_table, LogRecipient._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            [[plan]] = cursor.fetchall()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            nodes = list(plan_nodes(plan[0]["Plan"]))
            shown = json.dumps(plan, indent=1)
            scans = sorted((n.get("Relation Name"), n.get("Index Name")) for n in nodes if n.get("Relation Name"))
            pkey = f"{log_table}_pkey"
            assert scans == [(link_table, ADDRESS_INDEX), (log_table, RECIPIENT_INDEX), (log_table, pkey)], shown
            assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], shown
        elif connection.vendor == "mysql":
            cursor.execute(f"EXPLAIN {sql}", params)
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            # Each part of the union reads its index; the entries found are then read by primary key, once each
            # (not a scan of the log testing each entry: what "IN (... UNION ...)" without the derived table gives).
            keys = sorted((row["table"], row["key"]) for row in rows if not row["table"].startswith("<"))
            assert keys == [(link_table, ADDRESS_INDEX), (log_table, "PRIMARY"), (log_table, RECIPIENT_INDEX)], rows
            assert all(row["type"] != "ALL" for row in rows if not row["table"].startswith("<")), rows
            assert not [row for row in rows if "DEPENDENT" in row["select_type"]], rows
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
            assert f"SEARCH {log_table} USING COVERING INDEX {RECIPIENT_INDEX} (recipient=?)" in plan, plan
            assert f"SEARCH {link_table} USING COVERING INDEX {ADDRESS_INDEX} (address=?)" in plan, plan
            assert f"SEARCH {log_table} USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
            assert "SCAN " not in plan, plan


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)
