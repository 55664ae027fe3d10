"""Find the backend that really sends the queued mail."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string

from mailer.conf import mailer_settings

QUEUE_BACKEND = "mailer.backend.DbBackend"


def sending_backend_class() -> type[BaseEmailBackend]:
    """The class named by ``MAILER_EMAIL_BACKEND``; refuses one that would queue again."""
    from mailer.backend import DbBackend

    path = mailer_settings.EMAIL_BACKEND
    backend_class = import_string(path)
    if issubclass(backend_class, DbBackend):
        try:
            email_backend = getattr(settings, "EMAIL_BACKEND", None)
        except Exception:  # Django 6.1 refuses the read when MAILERS is set.
            email_backend = None
        raise ImproperlyConfigured(
            f"MAILER_EMAIL_BACKEND is {path!r}, which puts mail back on the queue instead of sending it "
            f"(EMAIL_BACKEND is {email_backend!r}). Set EMAIL_BACKEND to {QUEUE_BACKEND!r} and "
            "MAILER_EMAIL_BACKEND to the backend that really sends, for example "
            "'django.core.mail.backends.smtp.EmailBackend'."
        )
    return backend_class


def open_connection() -> BaseEmailBackend:
    """A connection to the real backend, opened so that it can be reused for many messages."""
    connection = sending_backend_class()(fail_silently=False)
    connection.open()
    return connection
