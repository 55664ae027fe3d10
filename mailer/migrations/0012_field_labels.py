import django.utils.timezone
from django.db import migrations, models

# The choices as Django deconstructs the enumerations of mailer.choices: their English words.
PRIORITY_CHOICES = [(1, "high"), (2, "medium"), (3, "low"), (4, "deferred")]
RESULT_CHOICES = [("1", "success"), ("2", "don't send"), ("3", "failure")]


class Migration(migrations.Migration):
    """Translatable labels (verbose names) for the fields the admin shows.

    State only: labels are not stored in the database, and Django runs no SQL for this migration
    on any backend (``sqlmigrate mailer 0012`` shows none), so a 2.x process can keep running.
    """

    dependencies = [("mailer", "0011_normalise_dont_send_entries")]

    operations = [
        migrations.AlterField(
            model_name="dontsendentry",
            name="to_address",
            field=models.EmailField(max_length=254, verbose_name="to address"),
        ),
        migrations.AlterField(
            model_name="dontsendentry",
            name="when_added",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="when added"),
        ),
        migrations.AlterField(
            model_name="message",
            name="priority",
            field=models.PositiveSmallIntegerField(choices=PRIORITY_CHOICES, default=2, verbose_name="priority"),
        ),
        migrations.AlterField(
            model_name="message",
            name="retry_count",
            field=models.IntegerField(default=0, verbose_name="retry count"),
        ),
        migrations.AlterField(
            model_name="message",
            name="when_added",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="when added"),
        ),
        migrations.AlterField(
            model_name="messagelog",
            name="log_message",
            field=models.TextField(verbose_name="log message"),
        ),
        migrations.AlterField(
            model_name="messagelog",
            name="message_id",
            field=models.TextField(editable=False, null=True, verbose_name="message id"),
        ),
        migrations.AlterField(
            model_name="messagelog",
            name="priority",
            field=models.PositiveSmallIntegerField(choices=PRIORITY_CHOICES, db_index=True, verbose_name="priority"),
        ),
        migrations.AlterField(
            model_name="messagelog",
            name="result",
            field=models.CharField(choices=RESULT_CHOICES, max_length=1, verbose_name="result"),
        ),
        migrations.AlterField(
            model_name="messagelog",
            name="when_added",
            field=models.DateTimeField(db_index=True, verbose_name="when added"),
        ),
        migrations.AlterField(
            model_name="messagelog",
            name="when_attempted",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="when attempted"),
        ),
    ]
