from django.db import migrations, models


class Migration(migrations.Migration):
    """Databases created before Django 1.7 may still have a 75-character to_address."""

    dependencies = [("mailer", "0001_initial")]

    operations = [
        migrations.AlterField(model_name="dontsendentry", name="to_address", field=models.EmailField(max_length=254)),
    ]
