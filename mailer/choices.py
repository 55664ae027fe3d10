"""The package's vocabulary: message priorities and log results, each a Django enumeration defined once.

Each member is declared with its English word, marked with ``gettext_noop()`` so that ``makemessages``
finds it. The word itself never changes: the django-mailer 2.x constants (``mailer.models.PRIORITIES``,
``RESULT_CODES``...) and the commands' output use it. ``label``, which the model fields' choices and so
the admin show, is the word translated into the language active where it is shown.

Django's ``makemigrations`` compares choices with translations deactivated, where a label is its English
word again: the fields' choices deconstruct as they did in 2.x and need no migration.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from django.db import models
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy, gettext_noop


class _Vocabulary:
    """What :class:`Priority` and :class:`Result` add to Django's enumerations."""

    _label_: str  # the English word, as declared (set by Django's ChoicesType)

    @property
    def word(self) -> str:
        """The English word, never translated: ``"high"``, ``"don't send"``..."""
        return self._label_

    @property
    def label(self) -> Promise:
        """The word translated into the active language when shown."""
        return gettext_lazy(self._label_)


class Priority(_Vocabulary, models.IntegerChoices):
    """Where a message stands in the queue; senders take high, then medium, then low, never deferred."""

    HIGH = 1, gettext_noop("high")
    MEDIUM = 2, gettext_noop("medium")
    LOW = 3, gettext_noop("low")
    DEFERRED = 4, gettext_noop("deferred")


class Result(_Vocabulary, models.TextChoices):
    """What a log entry records about an attempt to send a message."""

    SUCCESS = "1", gettext_noop("success")
    DONT_SEND = "2", gettext_noop("don't send")
    FAILURE = "3", gettext_noop("failure")


class DontSendReason(_Vocabulary, models.TextChoices):
    """Why a delivery event put an address on the don't-send list (an entry made by hand has none).

    The first three values are django-anymail's event types (``anymail.signals.EventType``).
    """

    BOUNCED = "bounced", gettext_noop("hard bounce")
    COMPLAINED = "complained", gettext_noop("complaint")
    UNSUBSCRIBED = "unsubscribed", gettext_noop("unsubscribe")
    SOFT_BOUNCES = "soft_bounces", gettext_noop("repeated soft bounces")


# The django-mailer 2.x spellings (re-exported by mailer.models): plain values and English words.
PRIORITY_HIGH: int = Priority.HIGH.value
PRIORITY_MEDIUM: int = Priority.MEDIUM.value
PRIORITY_LOW: int = Priority.LOW.value
PRIORITY_DEFERRED: int = Priority.DEFERRED.value
PRIORITIES: list[tuple[int, str]] = [(p.value, p.word) for p in Priority]
PRIORITY_MAPPING: dict[str, int] = {p.word: p.value for p in Priority}

RESULT_SUCCESS: str = Result.SUCCESS.value
RESULT_DONT_SEND: str = Result.DONT_SEND.value
RESULT_FAILURE: str = Result.FAILURE.value
RESULT_CODES: tuple[tuple[str, str], ...] = tuple((r.value, r.word) for r in Result)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first caller outside this package."""
    frame = sys._getframe(1)  # the function that will call warnings.warn()
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def get_priority(priority: Any) -> int:
    """Turn a ``priority`` argument into one of the :class:`Priority` values, as a plain ``int``.

    ``None`` means medium. The words ``"high"``, ``"medium"`` and ``"low"``
    still work but are deprecated; anything else raises ``ValueError``.
    """
    if priority is None:
        return PRIORITY_MEDIUM
    if isinstance(priority, str) and priority in PRIORITY_MAPPING:
        warnings.warn(
            f"Pass one of the mailer.models.PRIORITY_* constants as priority, not {priority!r}.",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        return PRIORITY_MAPPING[priority]
    # Only ints: 1.0 == PRIORITY_HIGH, but a float would reach the database as a float (one row took it, a
    # batch failed), and SPEC 3.6 refuses non-integer priorities.
    if not isinstance(priority, int) or isinstance(priority, bool) or priority not in PRIORITY_MAPPING.values():
        raise ValueError(f"Invalid priority {priority!r}: use one of the mailer.models.PRIORITY_* constants.")
    return int(priority)  # an IntEnum member becomes a plain int
