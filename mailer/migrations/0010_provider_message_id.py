import django.utils.timezone
from django.db import migrations, models
from django.db.models.functions import Lower

DONT_SEND_INDEX = "mailer_dontsend_lower_idx"


def _index():
    return models.Index(Lower("to_address"), name=DONT_SEND_INDEX)


def add_dont_send_index(apps, schema_editor):
    # An index on LOWER(to_address), which the don't-send lookup filters on, where the database has
    # indexes on expressions (PostgreSQL, SQLite, MySQL 8); MariaDB has none and scans the (short) list.
    # Not in the model's Meta, so that Django's check does not warn about it on MariaDB.
    if schema_editor.connection.features.supports_expression_indexes:
        schema_editor.add_index(apps.get_model("mailer", "DontSendEntry"), _index())


def remove_dont_send_index(apps, schema_editor):
    if schema_editor.connection.features.supports_expression_indexes:
        schema_editor.remove_index(apps.get_model("mailer", "DontSendEntry"), _index())


class Migration(migrations.Migration):
    """The provider's message id in the log; a default for ``DontSendEntry.when_added``; an index for the
    case-insensitive don't-send lookup."""

    dependencies = [("mailer", "0009_mailer_alias")]

    operations = [
        migrations.AddField(
            model_name="messagelog",
            name="provider_message_id",
            field=models.CharField(
                blank=True,
                db_index=True,
                editable=False,
                help_text="The id the sending provider gave the message (django-anymail's anymail_status).",
                max_length=255,
                null=True,
                verbose_name="provider message id",
            ),
        ),
        migrations.AlterField(
            model_name="dontsendentry",
            name="when_added",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(add_dont_send_index, remove_dont_send_index, elidable=True),
    ]
