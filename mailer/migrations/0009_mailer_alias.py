from django.db import migrations, models


class Migration(migrations.Migration):
    """Which ``MAILERS`` alias queued each message, so that its own mailer sends it (Django 6.1+).

    Nullable, so that processes still running django-mailer 2.x during an
    upgrade can go on inserting rows.
    """

    dependencies = [("mailer", "0008_message_queue_index")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="mailer",
            field=models.CharField(
                blank=True,
                help_text="The MAILERS alias the message was queued through; it decides which mailer sends it.",
                max_length=100,
                null=True,
                verbose_name="mailer",
            ),
        ),
        migrations.AddField(
            model_name="messagelog",
            name="mailer",
            field=models.CharField(
                blank=True,
                help_text="The MAILERS alias the message was queued through.",
                max_length=100,
                null=True,
                verbose_name="mailer",
            ),
        ),
    ]
