"""A Django 6.1 project configured only with ``MAILERS`` and ready for ``check --deploy``.

Used by ``tests/test_mailers_project.py`` in child processes. Django's test runner replaces every
``MAILERS`` entry with locmem, so this configuration is only real in a ``manage.py`` of its own.

- ``MAILER_TEST_DB_NAME``: the SQLite file.
- ``MAILER_TEST_SMTP_PORT``: the transactional relay on 127.0.0.1; ``MAILER_TEST_BULK_SMTP_PORT``: the bulk one.
"""

import os

from tests.support.dbconfig import database

env = os.environ.get

SECRET_KEY = "mailers-project-Xq7!p2Lr9#vT4wZ8kM1nB6cY3hJ5gF0dS-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["mail.example.org"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "mailer",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "tests.urls"
# tests.urls routes mailer.urls (one-click unsubscribe), which needs the site's address (check mailer.E018).
MAILER_UNSUBSCRIBE_BASE_URL = "https://testserver"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
DATABASES = {"default": database(env("MAILER_TEST_DB_NAME"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True


def relay(port):
    return {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": int(port), "use_tls": False, "timeout": 10},
    }


# The recommended Django 6.1 configuration: Django's mail functions queue through "default" (and "bulk"),
# and each queue names the relay that really sends its mail.
MAILERS = {
    "default": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "transactional"}},
    "bulk": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "bulk-relay", "priority": 3}},
    "transactional": relay(env("MAILER_TEST_SMTP_PORT", "25")),
    "bulk-relay": relay(env("MAILER_TEST_BULK_SMTP_PORT", "25")),
}
MAILER_LOCK_PATH = env("MAILER_TEST_LOCK_PATH")
