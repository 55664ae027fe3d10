"""The Celery application of ``tests.project.tasks_settings`` (``MAILER_TEST_TASKS_ENGINE=celery``)."""

from celery import Celery

app = Celery("tests.project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
