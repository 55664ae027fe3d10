"""Every ``MAILER_*`` setting with its default, read when it is first used.

django-mailer 2.x read some settings at import time, so ``override_settings``
and tests could not change them. Here every access goes through
:data:`mailer_settings`, which looks a value up when it is first asked for and
again after ``override_settings`` (or pytest-django's ``settings`` fixture)
changed any ``MAILER_*`` setting.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Queueing
    "MESSAGES_BATCH_SIZE": None,
    # An email that cannot be pickled as it is: queued without those attributes (with a warning), or refused.
    "DROP_UNPICKLABLE_ATTRIBUTES": True,
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
    # Failures (see docs/failures.rst and mailer/failures.py): a transient one is tried again after a random
    # wait of at most min(RETRY_MAX_DELAY, RETRY_DELAY * 2 ** (attempt - 1)) seconds, RETRY_MAX_ATTEMPTS
    # attempts in all; a permanent one leaves the queue (or is deferred, as in 2.3.2, with DEFER_PERMANENT_FAILURES).
    "RETRY_DELAY": 60,
    "RETRY_MAX_DELAY": 6 * 60 * 60,
    "RETRY_MAX_ATTEMPTS": 15,
    "FAILURE_CLASSIFIER": None,
    "DEFER_PERMANENT_FAILURES": False,
    "DONT_SEND_UNKNOWN_RECIPIENTS": False,
    # Soft bounces (deferred events, through mailer.contrib.anymail) that put an address on the don't-send
    # list: (N, DAYS) adds it at its Nth within DAYS days; None: soft bounces add nothing.
    "SOFT_BOUNCE_LIMIT": None,
    "PAUSE_SEND": False,
    # Staging: a list of addresses every message is sent to instead of its recipients (mailer.staging); None: off.
    "REDIRECT_TO": None,
    "EMPTY_QUEUE_SLEEP": 30,
    # How many messages one transaction claims, and how long the results of
    # messages already handed to the backend may stay uncommitted.
    "COMMIT_BATCH_SIZE": 100,
    "COMMIT_INTERVAL": 0.02,
    # Seconds an SMTP backend waits for the relay, when the project set no timeout of its own (None: for ever).
    "EMAIL_TIMEOUT": 30,
    # Connections (and threads) one sender hands messages to the backend through at once.
    "SENDER_CONNECTIONS": 1,
    "LEASE_DELIVERIES": False,  # mailer.leases: opt-in until "retry now" on a leased message is safe
    # Per relay, the most deliveries in any sliding window: {"default": ["14/s", "50000/d"]} (mailer.ratelimits).
    "RATE_LIMITS": {},
    # Rows written by django-mailer 2.x (unsigned pickles): decoded at all, and which classes beyond
    # Django's and the standard library's email classes they may contain.
    "ALLOW_LEGACY_DATA": True,
    "LEGACY_EXTRA_CLASSES": (),
    # Large attachments (mailer.storage): a STORAGES alias to keep attachments over the threshold (bytes) in,
    # instead of the row; and the largest mail queueing accepts (None: any, as far as the database takes it).
    "STORAGE": None,
    "STORAGE_THRESHOLD": 256 * 1024,
    "MAX_MESSAGE_SIZE": None,
    # Who may read mailer.views.metrics besides staff: requests that carry one of these tokens (a str or a list).
    "METRICS_TOKENS": (),
    # One-click unsubscribe links (mailer.unsubscribe): the https address of the site ("https://example.com"),
    # an address for mailto: unsubscribes besides the link, and how long a link works (seconds; None: for ever).
    "UNSUBSCRIBE_BASE_URL": None,
    "UNSUBSCRIBE_MAILTO": None,
    "UNSUBSCRIBE_MAX_AGE": 60 * 24 * 60 * 60,
    # Heartbeats (mailer.heartbeats, mailer.senders): the host name senders report (None: socket.gethostname()),
    # seconds between a sender's heartbeats (None or 0: none written), and after how long without one a sender
    # is taken for gone (None: 3 heartbeat intervals, at least 30 seconds).
    "SENDER_HOST": None,
    "HEARTBEAT_INTERVAL": 10,
    "SENDER_GONE_AFTER": None,
    # Continuous draining on Django's tasks framework (mailer.tasks, mailer.drain): how many drain_queue chains
    # per alias queueing keeps going (0: none), the seconds one run sends for, and the TASKS alias they go to.
    "DRAIN_TASKS": 0,
    "DRAIN_SLICE": 10,
    "TASKS_BACKEND": "default",
    # Locking
    "USE_FILE_LOCK": True,
    "LOCK_PATH": None,
    "LOCK_WAIT_TIMEOUT": -1,
}


class MailerSettings:
    """Attribute access to ``settings.MAILER_<NAME>``, falling back to the default.

    A value is looked up once and then kept (as an attribute of this object,
    so that later reads do not even reach ``__getattr__``): some are read for
    every message sent, and Django looks up an unset setting by raising and
    catching an exception. Changes made with ``override_settings`` (and the
    test tools built on it) send ``setting_changed``, which forgets them all.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            default = DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"Unknown django-mailer setting: MAILER_{name}") from None
        value = getattr(settings, f"MAILER_{name}", default)
        self.__dict__[name] = value
        return value

    def reload(self) -> None:
        self.__dict__.clear()


mailer_settings = MailerSettings()


@receiver(setting_changed)
def _forget_changed_settings(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("MAILER_"):
        mailer_settings.reload()
