"""The settings of the django-post-office children of ``benchmarks/postoffice.py`` (copied as ``bench_settings.py``).

The same shape as ``bench_settings.py`` (database, SMTP port and extra settings from ``BENCH_CONFIG``), for
django-post-office instead of this package: its app, its ``POST_OFFICE`` dict with the SMTP backend, and the
Django template engine it renders subjects and bodies with. Everything else is left at its defaults (five
threads per process, batches of 100, a log row for every delivery).
"""

import json
import os

_config = json.loads(os.environ["BENCH_CONFIG"])

SECRET_KEY = "django-mailer-benchmark-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["post_office"]
DATABASES = {"default": _config["database"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = _config.get("smtp_port", 25)
EMAIL_USE_TLS = False
EMAIL_USE_SSL = False
EMAIL_TIMEOUT = 60

POST_OFFICE = {"BACKENDS": {"default": _config.get("backend", "django.core.mail.backends.smtp.EmailBackend")}}
POST_OFFICE.update(_config.get("post_office", {}))
globals().update(_config.get("extra_settings", {}))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
