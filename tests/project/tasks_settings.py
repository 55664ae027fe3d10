"""``tests.project`` with a Django tasks backend, for the task workers of ``tests/test_task_workers.py``.

Everything else comes from ``tests.project.settings`` (the database, the relay, ``MAILER_TEST_SETTINGS``).
``MAILER_TEST_TASKS_ENGINE`` picks the backend:

- ``db``: django-tasks-db; its ``db_worker`` command runs the tasks, whose rows are in the project database.
- ``rq``: django-tasks-rq; django-rq's ``rqworker`` runs them, from Redis at ``MAILER_TEST_REDIS_URL``
  (a database number of its own per test run).
- ``celery``: django-tasks-celery (Django 6.0+); ``celery worker`` runs them (``tests.project.celery_app``),
  the broker at ``MAILER_TEST_BROKER_URL``, on the queue ``MAILER_TEST_CELERY_QUEUE``.
"""

import os

from tests.project.settings import *  # noqa: F403
from tests.project.settings import INSTALLED_APPS

_env = os.environ.get
ENGINE = _env("MAILER_TEST_TASKS_ENGINE", "db")

if ENGINE == "db":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
elif ENGINE == "rq":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_rq", "django_tasks_rq"]
    RQ_QUEUES = {"default": {"URL": _env("MAILER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")}}
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
elif ENGINE == "celery":
    TASKS = {
        "default": {
            "BACKEND": "django_tasks_celery.CeleryBackend",
            "OPTIONS": {"CELERY_APP": "tests.project.celery_app.app"},
        }
    }
    CELERY_BROKER_URL = _env("MAILER_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    CELERY_TASK_DEFAULT_QUEUE = _env("MAILER_TEST_CELERY_QUEUE", "mailer-tests")
    # Celery's advice for long tasks: a worker reserves only the task it runs (not four), so that the drain
    # chains spread over the workers, and acknowledges it when done, so that a killed worker's task is run again.
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    CELERY_TASK_ACKS_LATE = True
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False  # no pidbox queue per worker left in the broker
else:
    raise ValueError(f"MAILER_TEST_TASKS_ENGINE must be db, rq or celery, not {ENGINE!r}")
