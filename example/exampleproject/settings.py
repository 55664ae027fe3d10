"""A minimal project that queues its mail with django-mailer. Not for production (see the SECRET_KEY)."""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"  # Django's default is America/Chicago: times in the log and mailer_status would read CST

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "mailer",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exampleproject.urls"

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

# EXAMPLE_DB: another SQLite file (tests/test_admin_browser.py runs the example on a throw-away one).
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("EXAMPLE_DB") or BASE_DIR / "db.sqlite3"}
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

DEFAULT_FROM_EMAIL = "demo@example.com"
ADMINS = ["admin@example.com"] if django.VERSION >= (6, 0) else [("Admin", "admin@example.com")]

# What really sends the queue (`manage.py send_mail`): the console, or an SMTP server on this machine.
if os.environ.get("EXAMPLE_SMTP_PORT"):
    SENDER = {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": int(os.environ["EXAMPLE_SMTP_PORT"])},
    }
else:
    SENDER = {"BACKEND": "django.core.mail.backends.console.EmailBackend", "OPTIONS": {}}

if django.VERSION >= (6, 1):
    # Django 6.1: every Django mail function uses the "default" mailer, which is the queue;
    # the queue is sent through the "sender" mailer.
    MAILERS = {
        "default": {"BACKEND": "mailer.backend.DbBackend", "OPTIONS": {"deliver_using": "sender"}},
        "sender": SENDER,
    }
else:
    # Before Django 6.1: the same with EMAIL_BACKEND, MAILER_EMAIL_BACKEND and the EMAIL_* settings.
    EMAIL_BACKEND = "mailer.backend.DbBackend"
    MAILER_EMAIL_BACKEND = SENDER["BACKEND"]
    if "port" in SENDER["OPTIONS"]:
        EMAIL_HOST = SENDER["OPTIONS"]["host"]
        EMAIL_PORT = SENDER["OPTIONS"]["port"]

MAILER_LOCK_PATH = str(BASE_DIR / "send_mail")
