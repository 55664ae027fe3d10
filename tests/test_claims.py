"""mailer.claims and mailer.writes: bulk writes store what bulk_create would; claims reuse their SQL; commits."""

import datetime

import pytest
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection, models, transaction
from django.test.utils import CaptureQueriesContext, isolate_apps
from django.utils.timezone import now

import mailer
from mailer import claims, writes
from mailer.engine import send_all
from mailer.models import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MEDIUM, RESULT_FAILURE, Message, MessageLog
from tests.support.queries import inserts_into

pytestmark = pytest.mark.django_db

# What a text column must give back unchanged, COPY's escapes included (tab, newline, backslash, \N).
AWKWARD = ["", "plain", "tab\there", "line\nbreak\r\n", "back\\slash", "\\N", "ünïcødé ✉", "x" * 100_000]

COLUMNS = [field.attname for field in Message._meta.concrete_fields if not field.primary_key]
LOG_COLUMNS = [field.attname for field in MessageLog._meta.concrete_fields if not field.primary_key]


def stored(model, columns):
    return sorted(model.objects.values_list(*columns), key=repr)


def both_ways(rows, model, columns):
    """What bulk_create and insert() store for the same rows."""
    model.objects.bulk_create([model(**row) for row in rows])
    expected = stored(model, columns)
    model.objects.all().delete()
    writes.insert(model, rows, "default")
    return expected, stored(model, columns)


def test_insert_writes_what_bulk_create_writes():
    when = now().replace(microsecond=123456)

    rows = [
        {"message_data": text, "when_added": when - datetime.timedelta(days=n), "priority": PRIORITY_LOW, "mailer": m}
        for n, text in enumerate(AWKWARD)
        for m in (None, "bulk")
    ]
    expected, got = both_ways(rows, Message, COLUMNS)
    assert len(got) == 2 * len(AWKWARD)
    assert got == expected


def test_insert_writes_log_rows_with_nulls_and_distinct_timestamps():
    when = now()

    rows = [
        {
            "message_data": None if n % 2 else text,
            "message_id": None if n % 3 else f"<{n}@example.org>",
            "provider_message_id": None,
            "when_added": when,
            "when_attempted": when + datetime.timedelta(seconds=n),
            "priority": PRIORITY_HIGH,
            "result": RESULT_FAILURE,
            "log_message": text,
            "mailer": None,
        }
        for n, text in enumerate(AWKWARD)
    ]
    expected, got = both_ways(rows, MessageLog, LOG_COLUMNS)
    assert len(got) == len(AWKWARD)
    assert got == expected


def test_insert_keeps_empty_text_apart_from_null():
    row = {"message_data": "", "message_id": None, "when_added": now(), "priority": 1, "result": "1"}
    writes.insert(MessageLog, [row], "default")
    row = MessageLog.objects.get()
    if connection.features.interprets_empty_strings_as_nulls:
        pytest.skip("this database stores '' as NULL")
    assert (row.message_data, row.message_id) == ("", None)


def test_insert_honours_batch_size():
    rows = [{"message_data": f"m{n}"} for n in range(5)]
    with CaptureQueriesContext(connection) as captured:
        writes.insert(Message, rows, "default", batch_size=2)
    assert len(inserts_into("mailer_message", captured.captured_queries)) == 3
    assert sorted(Message.objects.values_list("message_data", flat=True)) == [f"m{n}" for n in range(5)]


def test_insert_of_nothing_runs_no_query():
    with CaptureQueriesContext(connection) as captured:
        writes.insert(Message, [], "default")
    assert captured.captured_queries == []


@isolate_apps("mailer")
def test_insert_refuses_a_field_it_cannot_write_as_is():
    class Other(models.Model):  # noqa: DJ008
        value = models.DecimalField(max_digits=5, decimal_places=2)

        class Meta:
            app_label = "mailer"
            managed = False

    if connection.vendor not in ("sqlite", "mysql", "postgresql"):
        pytest.skip("bulk_create writes any field there")
    with pytest.raises(TypeError, match="DecimalField 'value'"):
        writes.insert(Other, [{"value": 1}], "default")


def test_fields_missing_from_the_rows_take_their_defaults():
    before = now()
    writes.insert(Message, [{"message_data": "a"}, {"message_data": "b"}], "default")
    after = now()
    for message in Message.objects.all():
        assert (message.priority, message.retry_count, message.mailer) == (PRIORITY_MEDIUM, 0, None)
        assert before <= message.when_added <= after


def test_a_claimer_builds_its_sql_once_and_claims_in_send_order():
    rows = [{"message_data": f"m{n}", "priority": PRIORITY_LOW if n % 2 else PRIORITY_HIGH} for n in range(6)]
    writes.insert(Message, rows, "default")
    claim = claims.Claimer(None, "default")
    taken = []
    for _ in range(3):
        with transaction.atomic():
            batch = claim(2)
            taken.append([m.message_data for m in batch])
            writes.remove([m.pk for m in batch], "default")
    assert taken == [["m0", "m2"], ["m4", "m1"], ["m3", "m5"]]
    assert len(claim.statements) == 1
    with transaction.atomic():
        assert claim(2) == []


def test_a_claim_gives_the_messages_the_queryset_describes_deferred_fields_and_annotations_included():
    rows = [{"message_data": "m0", "retry_count": 2}, {"message_data": "m1", "retry_count": 0}]
    writes.insert(Message, rows, "default")
    queryset = Message.objects.defer("message_data").annotate(tries=models.F("retry_count") + 1)
    claim = claims.Claimer(queryset, "default")
    with transaction.atomic():
        batch = claim(5)
        # The claim read each column into its own field (by name, not position), converted for Python...
        assert [(m.tries, m.retry_count) for m in batch] == [(3, 2), (1, 0)]
        assert [m.when_added for m in batch] == list(Message.objects.values_list("when_added", flat=True))
        assert isinstance(batch[0].when_added, datetime.datetime)
        # ...and left the deferred one (and those the sender never reads) to be loaded when read; not_before is
        # read, for deliveries that go on across a commit (mailer.leases).
        assert batch[0].get_deferred_fields() == {
            "message_data",
            "last_error",
            "recipients",
            "subject_text",
        }
        assert [m.message_data for m in batch] == ["m0", "m1"]


class CommitModeBackend(BaseEmailBackend):
    """Records, for each message, how the sender's transaction is going to commit."""

    seen: list = []

    def send_messages(self, email_messages):
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            CommitModeBackend.seen.append(cursor.fetchone()[0])
        return len(email_messages)


@pytest.mark.django_db(transaction=True)
def test_postgres_sending_transactions_do_not_wait_for_the_disk_and_nothing_else_changes(settings):
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is a PostgreSQL setting")
    settings.MAILER_EMAIL_BACKEND = f"{__name__}.CommitModeBackend"
    CommitModeBackend.seen = []
    for n in range(3):
        mailer.send_mail(f"S{n}", "B", "f@example.org", [f"t{n}@example.org"])

    assert send_all().sent == 3

    assert CommitModeBackend.seen == ["off"] * 3
    with connection.cursor() as cursor:  # SET LOCAL: the connection's own setting is untouched
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    assert Message.objects.count() == 0 and MessageLog.objects.count() == 3
