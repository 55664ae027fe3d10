from django.db import migrations, models


class Migration(migrations.Migration):
    """The index behind claiming the queue in send order without scanning it."""

    dependencies = [("mailer", "0007_alter_messagelog_message_data")]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["priority", "when_added", "id"], name="mailer_message_queue_idx"),
        ),
    ]
