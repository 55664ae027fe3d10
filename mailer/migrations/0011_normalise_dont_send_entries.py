from django.db import migrations


def normalise_entries(apps, schema_editor):
    """Store each don't-send entry as the list now compares it (``mailer.addresses.entry_key``).

    Rows written as given ("Ann <ANN@x.org>", " ann@x.org ", "ÄNN@x.org") matched nothing, or only
    in ASCII on SQLite. Only the rows that change are written; safe while an older process runs (it
    reads the column as before, and its ``iexact`` lookups still find the folded rows).
    """
    from mailer.addresses import entry_key

    DontSendEntry = apps.get_model("mailer", "DontSendEntry")
    manager = DontSendEntry.objects.using(schema_editor.connection.alias)
    for pk, address in manager.order_by("pk").values_list("pk", "to_address").iterator():
        key = entry_key(address)
        if key != address:
            manager.filter(pk=pk).update(to_address=key)


class Migration(migrations.Migration):
    """Don't-send entries stored normalised: the address alone, lower-cased by Python (any script)."""

    dependencies = [("mailer", "0010_provider_message_id")]

    operations = [migrations.RunPython(normalise_entries, migrations.RunPython.noop, elidable=True)]
