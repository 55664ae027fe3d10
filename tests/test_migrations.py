"""The migrations: none missing, the 2.x names, back to the 2.x schema and forward, data migrations, indexes."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.utils.timezone import now

from mailer.models import (
    PRIORITY_MEDIUM,
    RESULT_SUCCESS,
    DontSendEntry,
    Message,
    MessageLog,
)
from tests.dropin.legacy_venv import LEGACY_MIGRATIONS
from tests.support.emails import make_email
from tests.support.pickles import insert_2x_rows, legacy_2x
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db


def test_no_missing_migrations():
    out = StringIO()
    call_command("makemigrations", "mailer", "--check", "--dry-run", stdout=out, stderr=out)
    assert "No changes detected" in out.getvalue()


def test_migration_names_match_django_mailer_2x():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    names = sorted(name for app, name in loader.disk_migrations if app == "mailer")
    assert names[:7] == LEGACY_MIGRATIONS
    assert all(name[:4].isdigit() and int(name[:4]) >= 8 for name in names[7:])
    # A linear history: each migration depends on the one before it.
    for previous, name in zip(names, names[1:], strict=False):
        assert ("mailer", previous) in loader.disk_migrations[("mailer", name)].dependencies


@pytest.mark.django_db(transaction=True)
def test_migrate_back_to_2x_schema_and_forward():
    """A database at 2.3.2's last migration (0007) migrates forward, and back again."""
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("mailer")
    try:
        executor.migrate([("mailer", "0007_alter_messagelog_message_data")])
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    message = queue(email=make_email("After migrations"))
    assert Message.objects.get(pk=message.pk).subject == "After migrations"


@pytest.mark.django_db(transaction=True)
def test_migration_0004_converts_string_priorities():
    """2.x before 0004 stored priority as "1".."4": the migration turns them into integers."""
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("mailer")
    data = legacy_2x(make_email("From 2019"))
    try:
        executor.migrate([("mailer", "0003_messagelog_message_id")])
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            for priority in ("1", "3", "4"):
                cursor.execute(
                    f"INSERT INTO {qn('mailer_message')} ({qn('message_data')}, {qn('when_added')}, {qn('priority')}) "
                    "VALUES (%s, %s, %s)",
                    [data, now(), priority],
                )
            cursor.execute(
                f"INSERT INTO {qn('mailer_messagelog')} ({qn('message_data')}, {qn('when_added')}, {qn('priority')}, "
                f"{qn('when_attempted')}, {qn('result')}, {qn('log_message')}, {qn('message_id')}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [data, now(), "2", now(), RESULT_SUCCESS, "", "<old@example.org>"],
            )
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)

    assert sorted(Message.objects.values_list("priority", flat=True)) == [1, 3, 4]
    assert Message.objects.high_priority().count() == 1
    assert Message.objects.deferred().count() == 1
    assert all(m.subject == "From 2019" for m in Message.objects.all())
    log = MessageLog.objects.get()
    assert log.priority == PRIORITY_MEDIUM
    assert log.message_id == "<old@example.org>"


def test_the_dont_send_lookup_has_an_index_where_the_database_can_have_one():
    """Migration 0010 indexes LOWER(to_address) on PostgreSQL, SQLite and MySQL 8; MariaDB has no such index."""
    from django.db.models.functions import Lower

    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, DontSendEntry._meta.db_table)
    if not connection.features.supports_expression_indexes:
        assert "mailer_dontsend_lower_idx" not in indexes
        return
    assert "mailer_dontsend_lower_idx" in indexes
    DontSendEntry.objects.bulk_create(DontSendEntry(to_address=f"user{n}@example.org") for n in range(200))
    keys = ["user7@example.org", "nobody@example.org"]
    query = DontSendEntry.objects.annotate(key=Lower("to_address")).filter(key__in=keys).values_list("key", flat=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a small table: show that the index can be used
    plan = query.explain()
    assert "mailer_dontsend_lower_idx" in plan, plan
    assert list(query) == ["user7@example.org"]


def test_the_waiting_index_is_partial_where_the_database_has_partial_indexes():
    """Migration 0013 indexes not_before (rows with one only) on PostgreSQL and SQLite; MySQL and MariaDB have no
    partial index, and no index is made there: none in the model's Meta, so Django's check has nothing to warn of."""
    from django.core import checks

    from mailer.models import WAITING_INDEX

    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, Message._meta.db_table)
    assert (WAITING_INDEX in indexes) == connection.features.supports_partial_indexes
    warnings = checks.run_checks(databases=[connection.alias])
    assert not [w for w in warnings if w.id == "models.W037"], warnings


@pytest.mark.django_db(transaction=True)
def test_migration_0016_adds_the_search_columns_and_old_rows_are_filled_later():
    """Rows written before 0016 (here by 2.x, with a 2.x pickle and several recipients) keep NULL search columns
    through the migration; ``mailer_fill_search`` fills them, and the search then finds them by any address."""
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("mailer")
    data = legacy_2x(make_email("Before 0016", to=["Ann <ANN@example.org>"], cc=["cy@example.org"]))
    try:
        executor.migrate([("mailer", "0015_rate_limits")])
        insert_2x_rows(data)
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
        assert Message.objects.get().recipients is None
        assert MessageLog.objects.get().recipients is None
        assert not MessageLog.objects.search("cy@example.org").exists()

        call_command("mailer_fill_search", stdout=StringIO())

        for address in ("ann@example.org", "CY@example.org"):
            assert [m.subject_text for m in Message.objects.search(address)] == ["Before 0016"]
            assert [m.subject_text for m in MessageLog.objects.search(address)] == ["Before 0016"]
        # And back: 0015's schema has none of it; a 2.x process writing then still works.
        executor = MigrationExecutor(connection)
        executor.migrate([("mailer", "0015_rate_limits")])
        with connection.cursor() as cursor:
            columns = [c.name for c in connection.introspection.get_table_description(cursor, "mailer_messagelog")]
            assert "recipients" not in columns and "recipient" not in columns
            assert "mailer_logrecipient" not in connection.introspection.table_names(cursor)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
        Message.objects.all().delete()
        MessageLog.objects.all().delete()
