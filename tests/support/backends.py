"""Email backends and error handlers that misbehave on purpose, for settings that name them by dotted path.

``HERE`` + ``.FailingBackend`` (and so on) is the value for ``MAILER_EMAIL_BACKEND`` / ``MAILER_ERROR_HANDLER``.
The ``failures`` fixture (``tests/conftest.py``) installs ``FailingBackend`` and empties the two registries.
"""

import gc
import time

from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

HERE = __name__  # "tests.support.backends"

# subject -> exception FailingBackend raises for it.
FAILURES: dict[str, BaseException] = {}
# (connection, message, exc) of every call to the recording handlers.
HANDLED: list[tuple] = []


class FailingBackend(LocmemBackend):
    """Locmem, but raises ``FAILURES[subject]`` for the subjects listed there."""

    def send_messages(self, messages):
        for message in messages:
            exc = FAILURES.get(message.subject)
            if exc is not None:
                raise exc
        return super().send_messages(messages)


# time.monotonic() of each message TimingBackend was handed, in order.
SEND_TIMES: list[float] = []


class TimingBackend(LocmemBackend):
    """Locmem that notes when each message reached it (``SEND_TIMES``)."""

    def send_messages(self, messages):
        SEND_TIMES.extend(time.monotonic() for _ in messages)
        return super().send_messages(messages)


# time.time() of each message SlowConnectingBackend was handed, in order.
WALL_SEND_TIMES: list[float] = []


class SlowConnectingBackend(LocmemBackend):
    """Locmem whose connection takes 0.2 s to open, as a relay's TLS handshake can; notes when mail arrives."""

    def open(self):
        time.sleep(0.2)
        return super().open()

    def send_messages(self, messages):
        WALL_SEND_TIMES.extend(time.time() for _ in messages)
        return super().send_messages(messages)


class HeaderAddingBackend(LocmemBackend):
    """Locmem that stamps every message, as some real backends (ESP APIs) do."""

    def send_messages(self, messages):
        for message in messages:
            message.extra_headers["X-Backend-Stamp"] = "stamped"
        return super().send_messages(messages)


# For each message StoredContentBackend was handed: how many attachment contents read from MAILER_STORAGE were alive.
STORED_ALIVE: list[int] = []


class StoredContentBackend(BaseEmailBackend):
    """Builds each message and counts the stored attachments held in memory then (``STORED_ALIVE``); keeps none."""

    def send_messages(self, messages):
        from mailer.storage import StoredBytes

        for message in messages:
            message.message()
            gc.collect()
            STORED_ALIVE.append(sum(type(obj) is StoredBytes for obj in gc.get_objects()))
        return len(messages)


class MisconfiguredBackend(LocmemBackend):
    """A backend that cannot be set up (``open()`` raises), as with a missing API key."""

    def open(self):
        raise ImproperlyConfigured("the relay's API key is missing")


def handler_says_sent(connection, message, exc):
    HANDLED.append((connection, message, exc))
    return connection, "sent"


def handler_says_deferred(connection, message, exc):
    HANDLED.append((connection, message, exc))
    return None, "deferred"


def sent_subjects() -> list[str]:
    """The subjects of what the locmem backends sent (``mail.outbox``), in order."""
    return [email.subject for email in mail.outbox]


def handler_delegates_to_default(connection, message, exc):
    """A project's handler that records, then hands over to 2.3.2's default (which defers and logs)."""
    from mailer.engine import handle_delivery_exception

    HANDLED.append((connection, message, exc))
    return handle_delivery_exception(connection, message, exc)
