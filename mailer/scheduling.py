"""Mail due later, and mail that expires: ``send_at`` and ``expires_at``, checked when a message is queued.

A message queued with ``send_at`` is stored with ``Message.not_before`` set to it: the claim
(:mod:`mailer.claims`) already skips rows whose ``not_before`` is ahead, and the long-running
senders wake up for the next one (:func:`mailer.wakeups.until_due`). A *scheduled* message is
one with ``not_before`` set and no failed attempt yet. ``expires_at`` is ``Message.expires_at``:
a sender that claims the message after it, or whose next attempt would come after it, drops
the message instead of sending it (:func:`mailer.outcomes.expired`).

Both are taken from keyword arguments of the queueing functions or from attributes of the
``EmailMessage`` (``email.send_at = ...``, django-anymail's name for ESP-side scheduling). The
stored email keeps neither attribute: the queue honours them, and a django-anymail backend that
delivers the message must not schedule it a second time.
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.utils import timezone

ATTRIBUTES = ("send_at", "expires_at")

Schedule = tuple[datetime.datetime | None, datetime.datetime | None]  # (send_at, expires_at), checked

_PACKAGE = os.path.dirname(__file__)


def checked_time(name: str, value: Any) -> datetime.datetime | None:
    """``value`` as a datetime the queue stores (``None``: not given), or ``TypeError``.

    Aware datetimes are taken as they are. A naive one follows Django's
    ``USE_TZ`` rules, as a model's ``DateTimeField`` does: with ``USE_TZ =
    True`` it is read in the current time zone, with a ``RuntimeWarning``; with
    ``USE_TZ = False`` it is local time already. A ``date`` is refused (which
    time of the day?), and so is a number (seconds since when, in what unit?).
    """
    if value is None or _anymail_unset(value):
        return None
    if not isinstance(value, datetime.datetime):
        hint = " (a date, not a time: give a datetime)" if isinstance(value, datetime.date) else ""
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}{hint}: {value!r}")
    if not settings.USE_TZ:
        # Stored as local time, which the claim compares with timezone.now(); an aware value is converted.
        return timezone.make_naive(value, timezone.get_default_timezone()) if timezone.is_aware(value) else value
    if timezone.is_aware(value):
        return value
    zone = timezone.get_current_timezone()
    aware = timezone.make_aware(value, zone)
    warnings.warn(
        f"{name} received the naive datetime {value.isoformat()} while time zone support is active "
        f"(USE_TZ = True): taken as {aware.isoformat()}, in the current time zone {zone}. "
        "Pass an aware datetime to say which time you mean.",
        RuntimeWarning,
        stacklevel=_callers_level(),
    )
    return aware


def checked_schedule(send_at: Any, expires_at: Any) -> Schedule:
    """``(send_at, expires_at)`` checked (:func:`checked_time`); ``ValueError`` if the message expires before it is due.

    An ``expires_at`` already past is accepted: the first sender that reaches the message logs it as
    expired (the clocks of the process that queues and of those that send may differ).
    """
    send_at = checked_time("send_at", send_at)
    expires_at = checked_time("expires_at", expires_at)
    if send_at is not None and expires_at is not None and expires_at <= send_at:
        raise ValueError(
            f"expires_at ({expires_at.isoformat()}) must be after send_at ({send_at.isoformat()}): "
            "the message would expire before it may be sent"
        )
    return send_at, expires_at


def schedule_of(email: EmailMessage, default: Schedule = (None, None)) -> Schedule:
    """The checked ``(send_at, expires_at)`` of ``email``: its own attributes, else ``default`` (checked already)."""
    state = getattr(email, "__dict__", {})
    own_send_at = state.get("send_at")
    own_expires_at = state.get("expires_at")
    if own_send_at is not None and _anymail_unset(own_send_at):
        own_send_at = None
    if own_send_at is None and own_expires_at is None:
        return default
    return checked_schedule(
        default[0] if own_send_at is None else own_send_at, default[1] if own_expires_at is None else own_expires_at
    )


def unscheduled(email: EmailMessage) -> EmailMessage:
    """``email`` as it is stored: without ``send_at`` and ``expires_at`` (a shallow copy, if it had them).

    The caller's object is left as it is. django-anymail reads ``send_at`` off the message it is
    given and would have the ESP hold it back once more, after the queue already did.
    """
    state = getattr(email, "__dict__", None)
    if state is None or ("send_at" not in state and "expires_at" not in state):  # most mail: nothing to copy
        return email
    clone = object.__new__(type(email))
    clone.__dict__.update({key: value for key, value in state.items() if key not in ATTRIBUTES})
    return clone


def _anymail_unset(value: Any) -> bool:
    """django-anymail's "not set" marker (``AnymailMessage.send_at`` defaults to it); no import of anymail."""
    utils = sys.modules.get("anymail.utils")
    return utils is not None and value is getattr(utils, "UNSET", None)


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame outside this package, for a warning raised by our caller.

    The warning then names the line of the project's code that queued the message, however deep in
    this package the check ran.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE + os.sep):
        frame = frame.f_back
        level += 1
    return level
