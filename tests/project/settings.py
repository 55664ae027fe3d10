"""Settings for the management commands that tests run in child processes (see ``tests/support/procs.py``).

Everything comes from the environment:

- ``MAILER_TEST_DB``: sqlite (default), postgres or mysql; ``MAILER_TEST_DB_NAME``: the database
  (for SQLite a file path: the child cannot see the parent's in-memory test database).
- ``MAILER_TEST_SMTP_PORT``: send through SMTP to 127.0.0.1 on that port; otherwise
  ``MAILER_TEST_EMAIL_BACKEND`` (default: the dummy backend, which accepts and drops everything).
- ``MAILER_TEST_MAILERS=1`` (Django 6.1+): configure mail the ``MAILERS`` way instead, as an upgraded project
  does (Django refuses ``EMAIL_BACKEND``/``EMAIL_*`` next to ``MAILERS``): ``"default"`` queues and delivers
  through ``"smtp"`` (127.0.0.1 at ``MAILER_TEST_SMTP_PORT``).
- ``MAILER_TEST_LOCK_PATH``, ``MAILER_TEST_USE_FILE_LOCK`` ("0"/"1"), ``MAILER_TEST_EMPTY_QUEUE_SLEEP``.
- ``MAILER_TEST_SETTINGS``: a JSON object of any further settings, applied last.
- ``MAILER_TEST_LOG_LEVEL``: level of the console log on stderr (default INFO).
"""

import json
import os
import tempfile

from tests.support.dbconfig import database, vendor

env = os.environ.get

SECRET_KEY = "django-mailer-tests-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "mailer"]
_db_name = env("MAILER_TEST_DB_NAME")
if not _db_name and vendor() == "sqlite":
    _db_name = os.path.join(tempfile.gettempdir(), "mailer-project.sqlite3")
DATABASES = {"default": database(_db_name)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = "mailer.backend.DbBackend"
if env("MAILER_TEST_SMTP_PORT"):
    MAILER_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = "127.0.0.1"
    EMAIL_PORT = int(env("MAILER_TEST_SMTP_PORT"))
    EMAIL_USE_TLS = False
else:
    MAILER_EMAIL_BACKEND = env("MAILER_TEST_EMAIL_BACKEND", "django.core.mail.backends.dummy.EmailBackend")

if env("MAILER_TEST_MAILERS") == "1":
    # Django 6.1 refuses EMAIL_BACKEND and EMAIL_* next to MAILERS: the queue alias names the real sender.
    for _name in ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_USE_TLS", "MAILER_EMAIL_BACKEND"):
        globals().pop(_name, None)
    MAILERS = {
        "default": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "smtp"}},
        "smtp": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": int(env("MAILER_TEST_SMTP_PORT", "25")), "use_tls": False},
        },
    }

if env("MAILER_TEST_LOCK_PATH"):
    MAILER_LOCK_PATH = env("MAILER_TEST_LOCK_PATH")
if env("MAILER_TEST_USE_FILE_LOCK"):
    MAILER_USE_FILE_LOCK = env("MAILER_TEST_USE_FILE_LOCK") == "1"
if env("MAILER_TEST_EMPTY_QUEUE_SLEEP"):
    MAILER_EMPTY_QUEUE_SLEEP = float(env("MAILER_TEST_EMPTY_QUEUE_SLEEP"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env("MAILER_TEST_LOG_LEVEL", "INFO")},
}

globals().update(json.loads(env("MAILER_TEST_SETTINGS") or "{}"))
