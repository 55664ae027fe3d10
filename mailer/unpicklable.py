"""What is stored of an email that cannot be pickled as it is.

An ``EmailMessage`` subclass may keep things that have nothing to do with
the mail as attributes: the request it was rendered for (djoser does), a
template context, a lock. Pickling such an email fails. :func:`storable`
is called only then (:func:`mailer.serialization.dumps` tries the email as
it is first, so picklable mail is stored exactly as before): it keeps the
email's content and every attribute that pickles, and drops the others with
one :class:`UnpicklableAttributesWarning` naming them, or refuses the email
when ``MAILER_DROP_UNPICKLABLE_ATTRIBUTES`` is False.

Nothing of the subclass runs later on the email's behalf but what Django's
classes do: the queue stores the content as it is when the email is queued.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
import warnings
from typing import Any

import django.core.mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from mailer.conf import mailer_settings

# What pickle raises for an object it cannot store: TypeError (a lock, a socket), PicklingError (a lambda),
# AttributeError (an instance of a class defined in a function).
PICKLING_ERRORS = (TypeError, AttributeError, pickle.PicklingError)

# What backends read off a message besides Django's attributes: django-anymail's (send_at is taken out
# by the queue, mailer.scheduling). Content: never dropped.
BACKEND_ATTRIBUTES = frozenset(
    {
        "envelope_sender",
        "metadata",
        "send_at",
        "tags",
        "track_clicks",
        "track_opens",
        "template_id",
        "merge_data",
        "merge_global_data",
        "merge_metadata",
        "merge_headers",
        "esp_extra",
    }
)


class UnpicklableAttributesWarning(RuntimeWarning):
    """An email was queued without attributes that cannot be pickled (they are named in the warning)."""


@functools.cache
def content_attributes() -> frozenset[str]:
    """The attributes that make up an email: Django's (as its classes set them) and those backends read."""
    names = set(vars(EmailMultiAlternatives(from_email="x@example.com")))
    names |= {"content_subtype", "mixed_subtype", "alternative_subtype", "encoding"}
    names -= {"connection", "_connection"}  # never stored (mailer.serialization)
    return frozenset(names | BACKEND_ATTRIBUTES)


def plain_class(state: dict) -> type[EmailMessage]:
    """Django's class for an email with this ``__dict__``: with alternatives or without."""
    return EmailMultiAlternatives if "alternatives" in state else EmailMessage


def build(cls: type, state: dict) -> Any:
    """An instance of ``cls`` with ``state`` as its ``__dict__``, as unpickling makes it (no ``__init__``)."""
    obj = object.__new__(cls)
    obj.__dict__.update(state)
    return obj


def storable(email: Any, error: Exception) -> Any:
    """What to store of ``email``, which pickle refused with ``error``.

    Raises ``TypeError`` if its content itself cannot be pickled, or if
    ``MAILER_DROP_UNPICKLABLE_ATTRIBUTES`` is False and something would be
    dropped; re-raises ``error`` for anything but an email.
    """
    if not isinstance(email, EmailMessage):
        raise error
    state = vars(email)
    dropped = [name for name, value in state.items() if not _picklable(value)]
    label = f"{type(email).__module__}.{type(email).__qualname__}"
    content = [name for name in dropped if name in content_attributes()]
    if content:
        names = ", ".join(content)
        raise TypeError(f"cannot queue the {label} email: its {names} cannot be pickled ({error})") from error
    kept = {name: value for name, value in state.items() if name not in dropped}
    cls = type(email)
    changes = []
    if dropped:
        changes.append(f"without its attribute(s) {', '.join(dropped)}, which cannot be pickled")
    if not _picklable(cls):  # defined in a function, say: a class pickle cannot name
        cls = plain_class(kept)
        changes.append(f"as a plain {cls.__name__}: the class itself cannot be pickled")
    if not changes:
        raise error  # something else about the class (its own __getstate__ or __reduce__): not ours to fix
    what = " and ".join(changes)
    if not mailer_settings.DROP_UNPICKLABLE_ATTRIBUTES:
        raise TypeError(
            f"cannot queue the {label} email {what} ({error}): MAILER_DROP_UNPICKLABLE_ATTRIBUTES is False"
        ) from error
    warnings.warn(
        f"{label} queued {what} ({error}). The queue stores the email's content as it is now; "
        "set MAILER_DROP_UNPICKLABLE_ATTRIBUTES = False to make this an error.",
        UnpicklableAttributesWarning,
        stacklevel=_project_level(),
    )
    return build(cls, kept)


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (*PICKLING_ERRORS, RecursionError):
        return False
    return True


# The warning names the project's line that sent the email: not ours, nor Django's send().
_INNER = tuple(os.path.dirname(module.__file__) + os.sep for module in (sys.modules["mailer"], django.core.mail))


def _project_level() -> int:
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_INNER):
        frame = frame.f_back
        level += 1
    return level
