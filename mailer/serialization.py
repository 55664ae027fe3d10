"""Email to text and back.

Rows written by this package are a base64 pickle signed with a key derived
from ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` are accepted when reading), in
the form ``mailer:v1:<base64>:<signature>``. Only signed data is unpickled
with the full :mod:`pickle` machinery.

Rows written by django-mailer 2.x (plain base64 pickle, or the raw pickle of
very old versions) carry no signature. They are decoded by
:class:`RestrictedUnpickler`, which can only build the classes an email is
made of, so a crafted row cannot import or call anything else.
"""

from __future__ import annotations

import _compat_pickle
import base64
import binascii
import io
import pickle
from typing import Any

from django.core import signing

PREFIX = "mailer:v1:"
SALT = "mailer.message_data"


class UndecodableMessage(ValueError):
    """Stored message data that cannot be turned back into an email."""


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT)


def dumps(obj: Any) -> str:
    """Serialise ``obj`` (usually an ``EmailMessage``) to signed text.

    A backend instance on ``obj.connection`` is never stored: it is not part
    of the message and may not be picklable.
    """
    connection = getattr(obj, "connection", None)
    if connection is not None:
        obj.connection = None
    try:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        if connection is not None:
            obj.connection = connection
    return PREFIX + _signer().sign(base64.b64encode(payload).decode("ascii"))


def loads(data: str | bytes | None) -> Any:
    """Decode what :func:`dumps` (or django-mailer 2.x) wrote.

    Raises :class:`UndecodableMessage` saying why when the data is empty,
    corrupt, fails its signature or needs a class that legacy data may not use.
    """
    if not data:
        raise UndecodableMessage("no message data")
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            return _legacy_raw(data)
    if data.startswith(PREFIX):
        return _signed(data[len(PREFIX) :])
    return _legacy(data)


def _signed(data: str) -> Any:
    try:
        payload = _signer().unsign(data)
    except signing.BadSignature:
        raise UndecodableMessage("bad signature: the data was not written by this site, or was altered") from None
    try:
        obj = pickle.loads(base64.b64decode(payload, validate=True))
    except Exception as exc:
        raise UndecodableMessage(f"signed data does not unpickle: {exc!r}") from exc
    return obj


def _legacy(data: str) -> Any:
    """django-mailer 2.x: base64 of a pickle; before that, the raw pickle."""
    raw = data.encode("latin-1", errors="replace")
    try:
        payload = base64.decodebytes(raw)
    except (binascii.Error, ValueError):
        return _legacy_raw(raw)
    try:
        return _restricted_loads(payload)
    except UndecodableMessage:
        raise
    except Exception:
        return _legacy_raw(raw)


def _legacy_raw(raw: bytes) -> Any:
    try:
        return _restricted_loads(raw)
    except UndecodableMessage:
        raise
    except Exception as exc:
        raise UndecodableMessage(f"not a signed message, nor a django-mailer 2.x pickle: {exc!r}") from exc


class _DroppedConnection:
    """Stands in for a backend instance pickled by django-mailer 2.x along with the email."""

    def __setstate__(self, state: Any) -> None:
        pass


_ALLOWED_GLOBALS = {
    ("copyreg", "_reconstructor"),
    ("copy_reg", "_reconstructor"),
    ("_codecs", "encode"),
    ("builtins", "object"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("collections", "OrderedDict"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("django.utils.safestring", "SafeString"),
    ("django.utils.safestring", "SafeText"),
}

# Modules whose *classes* (not functions) legacy data may build.
_ALLOWED_CLASS_MODULES = ("django.core.mail.message", "email.")

# Backend instances that 2.x pickled as ``email.connection``: replaced, never built.
_CONNECTION_MODULES = ("django.core.mail.backends.", "mailer.backend")


def _is_email_module(module: str) -> bool:
    return module == "email" or module.startswith(_ALLOWED_CLASS_MODULES)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds the classes an email is made of."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 name Python 2 modules (``copy_reg``, ``__builtin__``): check what they stand for.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if not name.isidentifier():
            # A dotted name ("EmailMessage.__init__.__class__") walks attributes from an allowed class to
            # anything, the function and code types included: never part of an email.
            raise UndecodableMessage(f"legacy data refers to {module}.{name}, which an email may not contain")
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "mailer.backend" or module.startswith(_CONNECTION_MODULES):
            return _DroppedConnection
        if _is_email_module(module):
            obj = super().find_class(module, name)
            # Only classes defined there: not what those modules import (functools.partial, io...).
            if isinstance(obj, type) and _is_email_module(obj.__module__):
                return obj
        raise UndecodableMessage(f"legacy data refers to {module}.{name}, which an email may not contain")


def _restricted_loads(payload: bytes) -> Any:
    obj = RestrictedUnpickler(io.BytesIO(payload), fix_imports=True, encoding="latin-1").load()
    if isinstance(getattr(obj, "connection", None), _DroppedConnection):
        obj.connection = None
    return obj
