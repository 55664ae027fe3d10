"""Sending an email whose class this process cannot import, as Django's plain class.

An ``EmailMessage`` subclass removed or renamed in the code that sends still
names the rows queued before. The queue stores the email's content, not what
the subclass's methods would make of it later, so such a row is sent as a
plain ``EmailMessage`` (``EmailMultiAlternatives`` if it has alternatives)
with the same content, and its log entries say so (:func:`note_for`).

Only signed data (written by this site) gets here, data that
:func:`mailer.serialization.loads` would unpickle in full anyway. The
missing class is never looked for again nor called: a stand-in records what
the pickle gives it, and only Django's class is built from that, as pickle
builds an object (without ``__init__``). An email that needs another missing
class for its content (an attachment's, a header's) is not sent this way.
"""

from __future__ import annotations

import io
import pickle
import weakref
from typing import Any

from django.core.mail import EmailMessage

from mailer.unpicklable import build, content_attributes, plain_class

_NOTES: weakref.WeakKeyDictionary[EmailMessage, str] = weakref.WeakKeyDictionary()
_made_any = False  # has plain_email() made one in this process? (a sender asks note_for() twice per message)


class _StandIn:
    """Built where the pickle names a global this process cannot import: keeps what it is given, does nothing."""

    path = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type("StandIn", (_StandIn,), {"path": f"{module}.{name}"})


def plain_email(raw: bytes) -> EmailMessage | None:
    """The email pickled in ``raw`` as Django's plain class, if only its own class is missing; else ``None``.

    Attributes that are not the email's content and hold an object of a missing class are left out, and
    named in the note.
    """
    try:
        obj = _Unpickler(io.BytesIO(raw)).load()
    except Exception:
        return None
    state = getattr(obj, "state", None) if isinstance(obj, _StandIn) else None
    if not isinstance(state, dict) or not {"subject", "body", "to", "from_email"} <= state.keys():
        return None
    dropped = [name for name, value in state.items() if _holds_stand_in(value, set())]
    if any(name in content_attributes() for name in dropped):
        return None
    kept = {name: value for name, value in state.items() if name not in dropped}
    cls = plain_class(kept)
    email = build(cls, kept)
    note = f"sent as a plain django.core.mail.{cls.__name__}: its class {obj.path} cannot be imported here"
    if dropped:
        note = f"{note} (left out: {', '.join(dropped)}, of classes that cannot be imported either)"
    global _made_any
    _made_any = True
    _NOTES[email] = note
    return email


def note_for(email: EmailMessage | None) -> str:
    """What the log must say of ``email`` if :func:`plain_email` made it ("" otherwise)."""
    if not _made_any or email is None:
        return ""
    return _NOTES.get(email, "")


def _holds_stand_in(value: Any, seen: set[int]) -> bool:
    if isinstance(value, _StandIn):
        return True
    if id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, dict):
        return any(_holds_stand_in(k, seen) or _holds_stand_in(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_stand_in(item, seen) for item in value)
    state = getattr(value, "__dict__", None)
    return isinstance(state, dict) and _holds_stand_in(state, seen)
