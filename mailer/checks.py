"""System checks (``manage.py check``) for configurations that cannot send the queue.

The delivery check runs the same resolution as the sender
(:mod:`mailer.routing`), so a project learns at deploy time, not at the
first cron run, that its queued mail has nowhere to go. The sender checks
look at the file lock and the database; the checks of one command
(``runmailer``, ``runmailer_pg``) run when that command starts.
"""

from __future__ import annotations

import math
import os
from typing import Any

import django
from django.conf import settings
from django.core import checks
from django.core.checks.registry import CheckRegistry
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import SystemCheckError
from django.db import connections, router
from django.utils.module_loading import import_string

from mailer import routing, smtp
from mailer.conf import DEFAULTS, mailer_settings

# Django's backends that read the EMAIL_* settings when built without a MAILERS alias.
_SETTINGS_READING_BACKENDS = (
    "django.core.mail.backends.smtp.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
)

MAILERS_DOCS = "See 'Django 6.1 and MAILERS' in django-mailer's documentation."


def delivery_hint() -> str:
    """Where to read how the real sender is configured, for the Django that runs: ``MAILERS`` from 6.1 on."""
    docs = "'Django 6.1 and MAILERS'" if django.VERSION >= (6, 1) else "'Installation' (EMAIL_BACKEND and friends)"
    version = f"{django.VERSION[0]}.{django.VERSION[1]}"
    return f"See {docs} in django-mailer's documentation, and https://docs.djangoproject.com/en/{version}/topics/email/"


@checks.register()
def check_delivery(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every way mail enters the queue must lead to a mailer that sends (no loop, no missing alias)."""
    errors: list[checks.CheckMessage] = []
    paths = set()
    for alias in routing.aliases():
        try:
            route = routing.route(alias)
        except ImproperlyConfigured as exc:
            if isinstance(exc, routing.BackendNotImportable) and exc.setting == "MAILER_EMAIL_BACKEND":
                paths.add(exc.path)  # mailer.E002 says it
                continue
            error = checks.Error(str(exc), hint=delivery_hint(), id="mailer.E001")
            if error not in errors:
                errors.append(error)
        else:
            if route.path is not None:
                paths.add(route.path)
    for path in sorted(paths):
        errors.extend(_check_backend_path(path))
    if routing.mailers_configured():
        errors.extend(_check_queue_options())
        if mailer_settings.DELIVER_USING and hasattr(settings, "MAILER_EMAIL_BACKEND"):
            errors.append(
                checks.Warning(
                    "MAILER_EMAIL_BACKEND is set but not used: MAILER_DELIVER_USING names the mailer that sends.",
                    hint="Remove MAILER_EMAIL_BACKEND.",
                    id="mailer.W001",
                )
            )
        elif paths and not any(error.id == "mailer.E003" for error in errors):
            errors.append(
                checks.Warning(
                    "MAILER_EMAIL_BACKEND names the backend that sends the queue, next to MAILERS.",
                    hint="It still works, but with MAILERS, define an alias for that backend (its settings become "
                    "OPTIONS) and name it in MAILER_DELIVER_USING. " + MAILERS_DOCS,
                    id="mailer.W002",
                )
            )
    return errors


@checks.register()
def check_timeouts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``MAILER_EMAIL_TIMEOUT`` is a number of seconds, and some timeout applies to every SMTP mailer."""
    timeout = mailer_settings.EMAIL_TIMEOUT
    if timeout is not None:
        if not smtp.valid_timeout(timeout):
            return [
                checks.Error(
                    f"MAILER_EMAIL_TIMEOUT is {timeout!r}; it must be a number of seconds greater than 0, or None.",
                    hint="The default, 30, suits most relays.",
                    id="mailer.E006",
                )
            ]
        return []
    untimed = sorted({str(route) for route in _routes_quietly() if _smtp_without_timeout(route)})
    if not untimed:
        return []
    return [
        checks.Warning(
            f"No timeout applies to {', '.join(untimed)}: a relay that accepts the connection and never answers "
            "blocks the sender for ever, with the lock and its claimed messages.",
            hint="Set MAILER_EMAIL_TIMEOUT (default 30 seconds), or the backend's own timeout (EMAIL_TIMEOUT, or "
            "'timeout' in the alias's OPTIONS).",
            id="mailer.W006",
        )
    ]


# The longest wait between two attempts a check lets through: a retry a year on is no use to anyone (RFC 5321
# suggests giving up after 4 or 5 days), and far larger numbers would overflow the datetime of the next attempt.
LONGEST_RETRY_DELAY = 365 * 24 * 60 * 60


@checks.register()
def check_retries(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The settings of automatic retries: checked at deploy time, not when the first failure reads them."""
    errors: list[checks.CheckMessage] = []
    delays = {}
    for name, default in (("RETRY_DELAY", "60"), ("RETRY_MAX_DELAY", "21600 (6 hours)")):
        value = getattr(mailer_settings, name)
        if _is_number(value) and 0 <= value <= LONGEST_RETRY_DELAY:
            delays[name] = value
        else:
            errors.append(
                checks.Error(
                    f"MAILER_{name} is {value!r}; it must be a number of seconds (int or float), from 0 to "
                    f"{LONGEST_RETRY_DELAY} (one year).",
                    hint=f"The default is {default}.",
                    id="mailer.E007",
                )
            )
    if len(delays) == 2 and delays["RETRY_DELAY"] > delays["RETRY_MAX_DELAY"]:
        errors.append(
            checks.Error(
                f"MAILER_RETRY_DELAY ({delays['RETRY_DELAY']!r}) is greater than MAILER_RETRY_MAX_DELAY "
                f"({delays['RETRY_MAX_DELAY']!r}).",
                hint="The wait before a retry grows from MAILER_RETRY_DELAY seconds and never exceeds "
                "MAILER_RETRY_MAX_DELAY: make MAILER_RETRY_DELAY the smaller (the defaults are 60 and 21600).",
                id="mailer.E008",
            )
        )
    attempts = mailer_settings.RETRY_MAX_ATTEMPTS
    if not (isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 1):
        errors.append(
            checks.Error(
                f"MAILER_RETRY_MAX_ATTEMPTS is {attempts!r}; it must be a whole number of attempts, 1 or more.",
                hint="The default is 15; 1 means no automatic retry. There is no 'unlimited': a message that "
                "fails for ever would be tried for ever, so give a number (the wait between attempts is capped "
                "by MAILER_RETRY_MAX_DELAY).",
                id="mailer.E009",
            )
        )
    errors.extend(_check_classifier(mailer_settings.FAILURE_CLASSIFIER))
    for name in ("DEFER_PERMANENT_FAILURES", "DONT_SEND_UNKNOWN_RECIPIENTS", "DROP_UNPICKLABLE_ATTRIBUTES"):
        value = getattr(mailer_settings, name)
        if not isinstance(value, bool):
            errors.append(
                checks.Error(
                    f"MAILER_{name} is {value!r}; it must be True or False.",
                    hint="A value read from the environment is a string, and any non-empty string is true: "
                    f"convert it to a bool in your settings. The default is {DEFAULTS[name]}.",
                    id="mailer.E011",
                )
            )
    return errors


@checks.register()
def check_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``MAILER_RATE_LIMITS``: a dict from relay to limits such as ``["14/s", "50000/d"]``, for relays that send."""
    from mailer import ratelimits

    try:
        ratelimits.parse_limits(mailer_settings.RATE_LIMITS)
    except ratelimits.LimitError as exc:
        return [
            checks.Error(
                str(exc),
                hint="For example MAILER_RATE_LIMITS = {'default': ['14/s', '50000/d']}: 'default' is the relay of "
                "MAILER_EMAIL_BACKEND, otherwise a MAILERS alias that delivers; each limit is N (1 or more) per "
                "s, m, h or d.",
                id="mailer.E012",
            )
        ]
    return []


@checks.register()
def check_storage(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``MAILER_STORAGE`` names an alias of ``STORAGES``; the threshold and the largest size are byte counts."""
    errors = []
    alias = mailer_settings.STORAGE
    if alias is not None and alias not in getattr(settings, "STORAGES", {}):
        errors.append(
            checks.Error(
                f"MAILER_STORAGE is {alias!r}, which is not an alias of STORAGES.",
                hint="Add it to STORAGES (for example a FileSystemStorage that every sender can read), "
                "or leave MAILER_STORAGE unset to keep attachments in the queue's rows.",
                id="mailer.E013",
            )
        )
    for name, value in (
        ("STORAGE_THRESHOLD", mailer_settings.STORAGE_THRESHOLD),
        ("MAX_MESSAGE_SIZE", mailer_settings.MAX_MESSAGE_SIZE),
    ):
        if (value is None and name == "MAX_MESSAGE_SIZE") or (type(value) is int and value >= 0):
            continue
        errors.append(
            checks.Error(
                f"MAILER_{name} is {value!r}; it must be a number of bytes (an integer, 0 or more).",
                hint="For example 256 * 1024." if name == "STORAGE_THRESHOLD" else "For example 10 * 1024 * 1024.",
                id="mailer.E014",
            )
        )
    return errors


def _is_number(value: Any) -> bool:
    """An int or a finite float (not a bool, which is an int to Python but not a number of seconds)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_classifier(path: Any) -> list[checks.CheckMessage]:
    hint = (
        "Give the dotted path of a function that takes the exception a delivery raised and returns "
        "'transient', 'permanent' or None (None: the built-in rule decides), or leave it None."
    )
    if path is None or callable(path):  # the function itself works too
        return []
    if not isinstance(path, str):
        problem = "it must be the dotted path of a function, or None"
    else:
        try:
            classifier = import_string(path)
        except Exception as exc:  # ImportError, or whatever importing the module raised
            problem = f"it cannot be imported: {exc}"
        else:
            if callable(classifier):
                return []
            problem = f"that is a {type(classifier).__name__}, not a function"
    return [checks.Error(f"MAILER_FAILURE_CLASSIFIER is {path!r}; {problem}.", hint=hint, id="mailer.E010")]


def _routes_quietly() -> list[routing.Route]:
    """The routes that resolve (check_delivery reports the others)."""
    found = []
    for alias in routing.aliases():
        try:
            found.append(routing.route(alias))
        except ImproperlyConfigured:
            pass
    return found


def _smtp_without_timeout(route: routing.Route) -> bool:
    if route.alias is not None:
        config = settings.MAILERS.get(route.alias, {})
        path = config.get("BACKEND", routing.DEFAULT_MAILERS_BACKEND)
        timeout = config.get("OPTIONS", {}).get("timeout")
    else:
        path = route.path
        timeout = getattr(settings, "EMAIL_TIMEOUT", None)
    try:
        backend_class = import_string(path)
    except ImportError:
        return False  # check_delivery says so
    return timeout is None and _is_subclass(backend_class, "django.core.mail.backends.smtp.EmailBackend")


def _check_backend_path(path: str) -> list[checks.CheckMessage]:
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        return [checks.Error(f"MAILER_EMAIL_BACKEND {path!r} cannot be imported: {exc}", id="mailer.E002")]
    if routing.mailers_configured() and any(_is_subclass(backend_class, name) for name in _SETTINGS_READING_BACKENDS):
        return [
            checks.Error(
                f"MAILER_EMAIL_BACKEND is {path!r}, which reads the EMAIL_* settings that MAILERS does not allow.",
                hint="Define a MAILERS alias for it and name that alias in MAILER_DELIVER_USING. " + MAILERS_DOCS,
                id="mailer.E003",
            )
        ]
    return []


def _check_queue_options() -> list[checks.CheckMessage]:
    from mailer.enqueue import get_priority
    from mailer.models import PRIORITY_DEFERRED

    errors: list[checks.CheckMessage] = []
    for alias, config in settings.MAILERS.items():
        if not routing.queues(config):
            continue
        priority = config.get("OPTIONS", {}).get("priority")
        try:
            if isinstance(priority, str) or get_priority(priority) == PRIORITY_DEFERRED:
                raise ValueError(priority)
        except ValueError:
            errors.append(
                checks.Error(
                    f"MAILERS[{alias!r}] has priority {priority!r}.",
                    hint="Use one of the mailer.models.PRIORITY_* constants (PRIORITY_HIGH, PRIORITY_MEDIUM, "
                    "PRIORITY_LOW).",
                    id="mailer.E004",
                )
            )
    return errors


def _is_subclass(cls: Any, path: str) -> bool:
    try:
        return isinstance(cls, type) and issubclass(cls, import_string(path))
    except ImportError:
        return False


@checks.register()
def check_senders(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """How senders are kept apart: the file lock, and what the database allows."""
    from mailer.locking import lock_path

    messages: list[checks.CheckMessage] = []
    if not mailer_settings.USE_FILE_LOCK:
        if _database_vendor() == "sqlite":
            messages.append(
                checks.Warning(
                    "MAILER_USE_FILE_LOCK is False on SQLite: senders running at once wait on SQLite's write lock "
                    "and fail after its timeout.",
                    hint="Keep the file lock on with SQLite, and run one sender at a time.",
                    id="mailer.W003",
                )
            )
        return messages
    directory = os.path.dirname(os.path.abspath(lock_path()))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        messages.append(
            checks.Warning(
                f"The file lock's directory {directory!r} does not exist or this process cannot write to it: "
                "every sending run will fail to take the lock.",
                hint="Set MAILER_LOCK_PATH to a path in a directory the senders can write to.",
                id="mailer.W004",
            )
        )
    return messages


# Checks for one command, run by that command when it starts (not by ``manage.py check``, since a project
# may well use SQLite with cron and never run runmailer).
command_checks = CheckRegistry()


@command_checks.register("runmailer")
def check_runmailer(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if _database_vendor() != "sqlite":
        return []
    return [
        checks.Warning(
            "runmailer on SQLite: each batch holds SQLite's write lock, and any other sender (send_mail from "
            "cron, the admin action) waits for it.",
            hint="Run only this sender, with the file lock on; for more, use PostgreSQL or MySQL/MariaDB.",
            id="mailer.W005",
        )
    ]


@command_checks.register("runmailer_pg")
def check_runmailer_pg(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    vendor = _database_vendor()
    if vendor == "postgresql":
        return []
    return [
        checks.Error(
            f"runmailer_pg needs PostgreSQL, and the queue is in a {vendor} database.",
            hint="Use runmailer instead, which polls every MAILER_EMPTY_QUEUE_SLEEP seconds.",
            id="mailer.E005",
        )
    ]


def run_command_checks(command: str) -> list[checks.CheckMessage]:
    """The checks for ``command``; raises ``SystemCheckError`` if any is an error."""
    found = command_checks.run_checks(tags=[command])
    errors = [message for message in found if message.is_serious()]
    if errors:
        raise SystemCheckError("\n".join(str(error) for error in errors))
    return found


def _database_vendor() -> str:
    from mailer.models import Message

    return connections[router.db_for_write(Message)].vendor
