"""Find the mailer that really sends queued mail: a ``MAILERS`` alias or ``MAILER_EMAIL_BACKEND``.

For a message queued through the ``MAILERS`` alias ``queued_using`` (``None``
for ``EMAIL_BACKEND``, :func:`mailer.send_mail` and rows from django-mailer
2.x, which count as the ``"default"`` alias), the first of these wins:

1. the ``deliver_using`` option of that alias's ``DbBackend``;
2. the ``MAILER_DELIVER_USING`` setting (a ``MAILERS`` alias);
3. the ``MAILER_EMAIL_BACKEND`` setting (a dotted path; before Django 6.1,
   or with ``MAILERS`` when the backend reads no ``EMAIL_*`` setting).

An alias that no longer queues (its ``BACKEND`` was changed to a real one)
sends its own leftover messages.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string

from mailer import smtp
from mailer.conf import mailer_settings

QUEUE_BACKEND = "mailer.backend.DbBackend"
DEFAULT_ALIAS = "default"  # django.core.mail.handler.DEFAULT_MAILER_ALIAS, which Django < 6.1 lacks
DEFAULT_MAILERS_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # an entry without BACKEND


def mailers_configured() -> bool:
    """Is this Django 6.1+ with the ``MAILERS`` setting defined?"""
    return django.VERSION >= (6, 1) and hasattr(settings, "MAILERS")


def is_queue_backend(path: str) -> bool:
    """Does the backend at ``path`` put mail on the queue (``DbBackend`` or a subclass)?"""
    from mailer.backend import DbBackend

    try:
        backend_class = import_string(path)
    except ImportError:
        return False
    return isinstance(backend_class, type) and issubclass(backend_class, DbBackend)


def mailer_config(alias: str) -> dict[str, Any] | None:
    """``MAILERS[alias]``, or ``None`` when ``MAILERS`` is not in use or lacks that alias."""
    if not mailers_configured():
        return None
    return settings.MAILERS.get(alias)


def queues(config: dict[str, Any] | None) -> bool:
    """Is this ``MAILERS`` entry one of our queues?"""
    return config is not None and is_queue_backend(config.get("BACKEND", DEFAULT_MAILERS_BACKEND))


class Route(NamedTuple):
    """The real mailer for some queued messages: a ``MAILERS`` alias, or a backend's dotted path.

    A tuple, not a dataclass: a sender looks routes up in dicts and sets several times per message,
    and a tuple's hash costs no Python call.
    """

    alias: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        return f"MAILERS[{self.alias!r}]" if self.alias is not None else str(self.path)

    def open(self) -> BaseEmailBackend:
        """A connection to the real mailer, opened so that it can be reused for many messages."""
        if self.alias is not None:
            from django.core.mail import mailers  # Django 6.1+

            connection = mailers[self.alias]
        else:
            # No fail_silently argument: Django 6.1 deprecates it, and False is every backend's default.
            backend_class = import_string(self.path)
            # Django 6.1 deprecates building its SMTP backend outside MAILERS, unless told alias=None: "from the
            # EMAIL_* settings", which is what MAILER_EMAIL_BACKEND means (RemovedInDjango2028Warning otherwise).
            settings_based = django.VERSION >= (6, 1) and issubclass(backend_class, smtp.SMTPBackend)
            connection = backend_class(**({"alias": None} if settings_based else {}))
        # Django's SMTP backend: a default timeout, every refused recipient recorded (see mailer.smtp).
        smtp.prepare(connection)
        connection.open()
        return connection


def route(queued_using: str | None = None) -> Route:
    """The real mailer for messages queued through the ``MAILERS`` alias ``queued_using``.

    Raises ``ImproperlyConfigured`` for a configuration that cannot send, such
    as one that would put the mail back on the queue.
    """
    if mailers_configured():
        # An alias since removed from MAILERS counts as "default".
        queued_using = queued_using if queued_using in settings.MAILERS else DEFAULT_ALIAS
        config = mailer_config(queued_using)
        if config is not None and not queues(config):
            _check_importable(config.get("BACKEND", DEFAULT_MAILERS_BACKEND), f"MAILERS[{queued_using!r}]['BACKEND']")
            return Route(alias=queued_using)
        options = (config or {}).get("OPTIONS", {})
        alias = options.get("deliver_using") or mailer_settings.DELIVER_USING
        if alias:
            return Route(alias=_check_alias(alias, queued_using))
        if not hasattr(settings, "MAILER_EMAIL_BACKEND"):
            raise ImproperlyConfigured(
                f"No mailer sends the mail queued through MAILERS[{queued_using!r}]. Name the MAILERS alias that "
                "really sends in that entry's OPTIONS as 'deliver_using', or in the MAILER_DELIVER_USING setting."
            )
    elif mailer_settings.DELIVER_USING:
        raise ImproperlyConfigured("MAILER_DELIVER_USING names a MAILERS alias; it needs Django 6.1+ and MAILERS.")
    return Route(path=_check_path(mailer_settings.EMAIL_BACKEND))


def routes() -> dict[str | None, Route]:
    """The route of every alias a message may carry; ``None`` also stands for any alias not in ``MAILERS``.

    Raises ``ImproperlyConfigured`` if any of them cannot send, so that a run
    stops before it takes any message.
    """
    return {alias: route(alias) for alias in aliases()}


def aliases() -> list[str | None]:
    """``None`` (mail queued without an alias) and every ``MAILERS`` alias."""
    return [None, *settings.MAILERS] if mailers_configured() else [None]


def _check_alias(alias: str, queued_using: str) -> str:
    config = mailer_config(alias)
    if config is None:
        raise ImproperlyConfigured(
            f"The mail queued through MAILERS[{queued_using!r}] is to be sent by "
            f"MAILERS[{alias!r}], which does not exist."
        )
    if queues(config):
        raise ImproperlyConfigured(
            f"The mail queued through MAILERS[{queued_using!r}] is to be sent by "
            f"MAILERS[{alias!r}], which puts mail back on the queue instead of sending it. Name an alias "
            "whose BACKEND really sends, for example 'django.core.mail.backends.smtp.EmailBackend'."
        )
    _check_importable(config.get("BACKEND", DEFAULT_MAILERS_BACKEND), f"MAILERS[{alias!r}]['BACKEND']")
    return alias


class BackendNotImportable(ImproperlyConfigured):
    """A real sender's backend path that cannot be imported; ``path`` and ``setting`` say which."""

    def __init__(self, message: str, path: str, setting: str) -> None:
        super().__init__(message)
        self.path = path
        self.setting = setting


def _check_importable(path: str, setting: str) -> None:
    """Refuse a backend path that cannot be imported (when system checks were skipped, mailer.E002 did not):
    the run stops before it takes a message, which stays queued as it is, instead of being deferred with
    an ImportError traceback as if the message were at fault."""
    try:
        import_string(path)
    except ImportError as exc:
        raise BackendNotImportable(
            f"{setting} is {path!r}, which cannot be imported ({exc}). The queued mail is held back, untouched, "
            "until it names a backend that can be, for example 'django.core.mail.backends.smtp.EmailBackend'.",
            path,
            setting,
        ) from exc


def _check_path(path: str) -> str:
    _check_importable(path, "MAILER_EMAIL_BACKEND")
    if is_queue_backend(path):
        problem = f"MAILER_EMAIL_BACKEND is {path!r}, which puts mail back on the queue instead of sending it"
        if mailers_configured():
            raise ImproperlyConfigured(
                f"{problem}. With MAILERS, name the alias that really sends in MAILER_DELIVER_USING (or in the "
                "queue alias's OPTIONS as 'deliver_using'), and remove MAILER_EMAIL_BACKEND."
            )
        raise ImproperlyConfigured(
            f"{problem} (EMAIL_BACKEND is {getattr(settings, 'EMAIL_BACKEND', None)!r}). Set EMAIL_BACKEND to "
            f"{QUEUE_BACKEND!r} and MAILER_EMAIL_BACKEND to the backend that really sends, for example "
            "'django.core.mail.backends.smtp.EmailBackend'."
        )
    return path
