"""Every ``MAILER_*`` setting with its default, read when it is used.

django-mailer 2.x read some settings at import time, so ``override_settings``
and tests could not change them. Here every access goes through
:data:`mailer_settings`, which looks the value up on each call.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Queueing
    "MESSAGES_BATCH_SIZE": None,
    # What really sends: a MAILERS alias (Django 6.1+), else a backend's dotted path.
    "DELIVER_USING": None,
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    # Delivery control
    "EMAIL_MAX_BATCH": None,
    "EMAIL_MAX_DEFERRED": None,
    "EMAIL_THROTTLE": 0,
    "EMAIL_MAX_RETRIES": None,
    "EMAIL_LOG_MESSAGE_DATA": True,
    # Give each message a Message-ID header before sending, unless it has one (some providers set their own).
    "ADD_MESSAGE_ID": True,
    "ERROR_HANDLER": "mailer.engine.handle_delivery_exception",
    "PAUSE_SEND": False,
    "EMPTY_QUEUE_SLEEP": 30,
    # How many messages one transaction claims, and how long the results of
    # messages already handed to the backend may stay uncommitted.
    "COMMIT_BATCH_SIZE": 100,
    "COMMIT_INTERVAL": 0.02,
    # Connections (and threads) one sender hands messages to the backend through at once.
    "SENDER_CONNECTIONS": 1,
    # Rows written by django-mailer 2.x (unsigned pickles): decoded at all, and which classes beyond
    # Django's and the standard library's email classes they may contain.
    "ALLOW_LEGACY_DATA": True,
    "LEGACY_EXTRA_CLASSES": (),
    # Locking
    "USE_FILE_LOCK": True,
    "LOCK_PATH": None,
    "LOCK_WAIT_TIMEOUT": -1,
}


class MailerSettings:
    """Attribute access to ``settings.MAILER_<NAME>``, falling back to the default."""

    def __getattr__(self, name: str) -> Any:
        try:
            default = DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"Unknown django-mailer setting: MAILER_{name}") from None
        return getattr(settings, f"MAILER_{name}", default)


mailer_settings = MailerSettings()
