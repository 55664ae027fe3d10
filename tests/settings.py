"""Django settings for the test suite (``pytest`` / ``runtests.py``). ``MAILER_TEST_DB`` picks the database."""

import django

from tests.support.dbconfig import database

SECRET_KEY = "django-mailer-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "mailer",
    "mailer.contrib.anymail",
    "tests",
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {"default": database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_URL = "/static/"

if django.VERSION >= (6, 1):
    # Django 6.1's way: the queue is a MAILERS alias. Django's test runner swaps every entry for
    # locmem; tests/conftest.py puts this one back.
    MAILERS = {"default": {"BACKEND": "mailer.backend.DbBackend"}}
    # MAILER_EMAIL_BACKEND next to MAILERS works; the check that suggests an alias instead is not for tests.
    SILENCED_SYSTEM_CHECKS = ["mailer.W002"]
else:
    EMAIL_BACKEND = "mailer.backend.DbBackend"
# What really sends, so that ``mail.outbox`` holds what ``send_all()`` sent.
MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# tests/urls.py routes mailer.urls (one-click unsubscribe), whose links need the site's address.
MAILER_UNSUBSCRIBE_BASE_URL = "https://testserver"
# No heartbeat thread in this process: it would write through a connection of its own, outside each test's
# transaction. Senders run as child processes (tests.project) write theirs (tests/test_heartbeats.py).
MAILER_HEARTBEAT_INTERVAL = None
