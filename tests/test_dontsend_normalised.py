"""The don't-send list matches addresses case-insensitively in every script, on every database (issue 12, item 11).

SQLite's LOWER() and LIKE fold ASCII letters only, so "ÄNN@example.org" on the list did not block
"änn@example.org"; entries created through the ORM ("Ann <ANN@x.org>", " ann@x.org ") were stored as
given and matched nothing. Entries are now stored normalised (the address alone, lower-cased by Python),
existing rows are normalised by migration 0011, and ``has_address()`` stays case-insensitive.
"""

import pytest
from django.core import mail
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils.timezone import now

import mailer
from mailer.engine import send_all
from mailer.models import DontSendEntry, Message

pytestmark = pytest.mark.django_db

ENTRY_FORMS = ["ÄNN@Example.org", "änn@example.org", "Änn Ärger <ÄNN@EXAMPLE.ORG>", "  änn@example.org  "]
RECIPIENT_FORMS = ["änn@example.org", "ÄNN@example.org", "Änn <Änn@Example.Org>"]


@pytest.mark.parametrize(
    "given, stored",
    [
        ("Ann <ANN@x.org>", "ann@x.org"),
        (" ann@x.org ", "ann@x.org"),
        ("ÄNN@Example.org", "änn@example.org"),
        ("ÉLODIE@BÜCHER.de", "élodie@bücher.de"),
    ],
)
def test_entries_are_stored_normalised(given, stored):
    got, _ = DontSendEntry.objects.get_or_create(to_address=given)
    created = DontSendEntry.objects.create(to_address=given)
    built = DontSendEntry(to_address=given)
    built.save()
    [bulk] = DontSendEntry.objects.bulk_create([DontSendEntry(to_address=given)])
    assert [e.to_address for e in (got, created, built, bulk)] == [stored] * 4
    assert set(DontSendEntry.objects.values_list("to_address", flat=True)) == {stored}


@pytest.mark.parametrize("entry", ENTRY_FORMS)
@pytest.mark.parametrize("recipient", RECIPIENT_FORMS)
def test_non_ascii_addresses_are_blocked_whatever_their_case(entry, recipient):
    DontSendEntry.objects.create(to_address=entry)
    assert DontSendEntry.objects.has_address(recipient)

    mailer.send_mail("queued", "body", "from@example.org", [recipient, "bob@example.org"])  # filtered when queueing
    assert Message.objects.get().to_addresses == ["bob@example.org"]


@pytest.mark.parametrize("entry", ENTRY_FORMS)
def test_an_entry_added_after_queueing_blocks_at_sending_time(entry):
    mailer.send_mail("queued", "body", "from@example.org", ["änn@EXAMPLE.org", "bob@example.org"])
    DontSendEntry.objects.create(to_address=entry)
    assert send_all().sent == 1
    assert mail.outbox[0].to == ["bob@example.org"]


def test_accents_still_count():
    """A database collation that ignores accents (MariaDB's default) must not block a different address."""
    DontSendEntry.objects.create(to_address="änn@example.org")
    assert not DontSendEntry.objects.has_address("ann@example.org")
    mailer.send_mail("queued", "body", "from@example.org", ["ann@example.org"])
    assert Message.objects.get().to_addresses == ["ann@example.org"]


def test_has_address_stays_case_insensitive_for_rows_a_2x_process_writes():
    """A django-mailer 2.x process still running writes rows as given, without normalising them."""
    entry = DontSendEntry.objects.create(to_address="placeholder@example.org")
    DontSendEntry.objects.filter(pk=entry.pk).update(to_address="Someone@Example.ORG")
    for asked in ("someone@example.org", "SOMEONE@EXAMPLE.ORG", "Someone <someone@example.org>"):
        assert DontSendEntry.objects.has_address(asked)
    assert not DontSendEntry.objects.has_address("someone@example.com")


@pytest.mark.django_db(transaction=True)
def test_migration_0011_normalises_existing_entries():
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("mailer")
    raw = ["ÄNN@Example.org", "Bob <BOB@example.org>", " cat@example.org ", "dan@example.org"]
    try:
        executor.migrate([("mailer", "0010_provider_message_id")])
        qn = connection.ops.quote_name
        insert = f"INSERT INTO {qn('mailer_dontsendentry')} ({qn('to_address')}, {qn('when_added')}) VALUES (%s, %s)"
        with connection.cursor() as cursor:
            for address in raw:
                cursor.execute(insert, [address, now()])
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaf)
    stored = sorted(DontSendEntry.objects.values_list("to_address", flat=True))
    assert stored == ["bob@example.org", "cat@example.org", "dan@example.org", "änn@example.org"]
    assert DontSendEntry.objects.has_address("Änn@example.org")
