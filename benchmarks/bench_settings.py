"""The settings of every benchmark child, for both packages (copied into a temporary directory).

Everything that varies comes from the JSON in ``BENCH_CONFIG``, written by ``benchmarks/run.py``: the same
values are given to our package and to django-mailer 2.3.2, so the package is the only difference.
"""

import json
import os

_config = json.loads(os.environ["BENCH_CONFIG"])

SECRET_KEY = "django-mailer-benchmark-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["mailer"]
DATABASES = {"default": _config["database"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = "mailer.backend.DbBackend"
MAILER_EMAIL_BACKEND = _config.get("backend", "django.core.mail.backends.dummy.EmailBackend")
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = _config.get("smtp_port", 25)
EMAIL_USE_TLS = False
EMAIL_USE_SSL = False
EMAIL_TIMEOUT = 60

MAILER_USE_FILE_LOCK = _config.get("file_lock", True)
MAILER_LOCK_PATH = _config["lock_path"]
MAILER_EMPTY_QUEUE_SLEEP = _config.get("empty_queue_sleep", 30)

# Scenario-specific settings, e.g. {"MAILER_SENDER_CONNECTIONS": 4}. A package that does not know a setting
# ignores it.
globals().update(_config.get("extra_settings", {}))

# Only warnings and errors, on stderr: per-message INFO lines would measure the terminal, not the package.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
