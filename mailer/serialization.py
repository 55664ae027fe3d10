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
import functools
import hashlib
import hmac
import io
import pickle
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.mail import message as mail_message
from django.utils.crypto import constant_time_compare
from django.utils.encoding import force_bytes

from mailer import standins, unpicklable
from mailer.conf import mailer_settings

PREFIX = "mailer:v1:"
SALT = "mailer.message_data"


class UndecodableMessage(ValueError):
    """Stored message data that cannot be turned back into an email."""


class NotDecodableHere(UndecodableMessage):
    """Intact data that this process cannot decode, though another one (the one that queued it) can.

    Not corrupt: a sender should leave such a row queued and say how to fix
    its configuration or deployment, rather than discard it.
    """


class UnknownSignature(NotDecodableHere):
    """Data in the signed format, with a well-formed signature that no key of this process matches."""


class MissingClass(NotDecodableHere):
    """Correctly signed data whose pickle needs a module or class this process cannot import."""


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT)


# Signing and checking with the current SECRET_KEY is on the path of every
# message queued and sent. django.core.signing.Signer derives its HMAC key
# from the secret anew for each signature; these functions make the same
# signatures (a test compares them with Signer's) with the key derived once.


@functools.lru_cache(maxsize=8)
def _hmac_key(secret: str | bytes) -> bytes:
    # As django.utils.crypto.salted_hmac() derives it for Signer(salt=SALT).
    return hashlib.sha256(force_bytes(SALT + "signer") + force_bytes(secret)).digest()


def _signature(value: str) -> str:
    digest = hmac.digest(_hmac_key(settings.SECRET_KEY), value.encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# Where an EmailMessage keeps its backend instance: ``_connection`` from Django 6.1
# (``connection`` became a deprecated property), ``connection`` before.
_CONNECTION_KEYS = ("connection", "_connection")
_CONNECTION_KEY = (
    "_connection" if isinstance(vars(mail_message.EmailMessage).get("connection"), property) else "connection"
)


def dumps(obj: Any) -> str:
    """Serialise ``obj`` (usually an ``EmailMessage``) to signed text.

    A backend instance attached to the email is never stored: it is not part
    of the message and may not be picklable. An email that cannot be pickled
    as it is is stored as :func:`mailer.unpicklable.storable` says.
    """
    state = getattr(obj, "__dict__", None)
    if state is not None and (state.get("connection") is not None or state.get("_connection") is not None):
        obj = _without_connection(obj, state)
    try:
        pickled = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except unpicklable.PICKLING_ERRORS as exc:
        # Only now: an email as it is (nearly every one) costs nothing more than before.
        pickled = pickle.dumps(unpicklable.storable(obj, exc), protocol=pickle.HIGHEST_PROTOCOL)
    value = base64.b64encode(pickled).decode("ascii")
    return f"{PREFIX}{value}:{_signature(value)}"


def _without_connection(obj: Any, state: dict) -> Any:
    """A shallow copy of ``obj`` with no backend instance (cheaper than :func:`copy.copy`)."""
    clone = object.__new__(type(obj))
    clone.__dict__.update(state)
    for key in _CONNECTION_KEYS:
        if key in state:
            clone.__dict__[key] = None
    return clone


def _upgrade(obj: Any) -> Any:
    """Fit an email pickled under another Django version to the one running now.

    Django renamed ``connection`` to ``_connection`` in 6.1, and from 5.2 it
    reads alternatives (and attachments) as named tuples: an email queued by
    an older Django, or by django-mailer 2.x, would otherwise fail to send
    after the project upgrades.
    """
    if not isinstance(obj, mail_message.EmailMessage):
        return obj
    state = obj.__dict__
    for key in _CONNECTION_KEYS:
        state.pop(key, None)
    state[_CONNECTION_KEY] = None
    alternatives, attachments = state.get("alternatives"), state.get("attachments")
    if alternatives and _ALTERNATIVE is not None and isinstance(alternatives, list):
        state["alternatives"] = [
            _ALTERNATIVE(*item) if type(item) is tuple and len(item) == 2 else item for item in alternatives
        ]
    if attachments and _ATTACHMENT is not None and isinstance(attachments, list):
        state["attachments"] = [
            _ATTACHMENT(*item) if type(item) is tuple and len(item) == 3 else item for item in attachments
        ]
    return obj


# Django 5.2+'s named tuples for alternatives and attachments (None before).
_ALTERNATIVE = getattr(mail_message, "EmailAlternative", None)
_ATTACHMENT = getattr(mail_message, "EmailAttachment", None)


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
            _check_legacy_allowed()
            return _upgrade(_legacy_raw(data))
    if data.startswith(PREFIX):
        return _upgrade(_signed(data[len(PREFIX) :]))
    _check_legacy_allowed()
    return _upgrade(_legacy(data))


def _check_legacy_allowed() -> None:
    if not mailer_settings.ALLOW_LEGACY_DATA:
        raise UndecodableMessage(
            "unsigned data (django-mailer 2.x format) is refused: MAILER_ALLOW_LEGACY_DATA is False"
        )


def _signed(data: str) -> Any:
    payload, _sep, signature = data.rpartition(":")
    if not constant_time_compare(signature, _signature(payload)):
        try:  # signed with one of SECRET_KEY_FALLBACKS, or not by this site
            payload = _signer().unsign(data)
        except signing.BadSignature:
            if _well_formed(payload, signature):
                raise UnknownSignature(
                    "signed with a key this process does not have: if another SECRET_KEY queued it, give this "
                    "process the same SECRET_KEY, or add that key to SECRET_KEY_FALLBACKS"
                ) from None
            raise UndecodableMessage("bad signature: the data was not written by this site, or was altered") from None
    try:
        raw = base64.b64decode(payload, validate=True)
    except Exception as exc:
        raise UndecodableMessage(f"signed data is not base64: {exc!r}") from exc
    try:
        obj = pickle.loads(raw)
    except (ImportError, AttributeError) as exc:
        # Signed by this site, so intact: the code that queued it has a class this process lacks.
        email = standins.plain_email(raw)  # its own class only: sent as Django's
        if email is not None:
            return email
        raise MissingClass(
            f"the email needs code this process cannot import ({exc}); deploy the code that queues such mail "
            "to the senders first (or together)"
        ) from exc
    except Exception as exc:
        raise UndecodableMessage(f"signed data does not unpickle: {exc!r}") from exc
    return obj


def signed_pickle(data: str) -> bytes | None:
    """The pickle inside signed row ``data``, if its signature is good; nothing is unpickled.

    For reading what a row refers to (:mod:`mailer.storage`) without trusting unsigned text.
    """
    if not data.startswith(PREFIX):
        return None
    payload, _sep, signature = data[len(PREFIX) :].rpartition(":")
    if not constant_time_compare(signature, _signature(payload)):
        try:
            payload = _signer().unsign(data[len(PREFIX) :])
        except signing.BadSignature:
            return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


_SIGNATURE_LENGTH = 43  # a SHA-256 HMAC in URL-safe base64, unpadded: what every key makes


def _well_formed(payload: str, signature: str) -> bool:
    """Could this signature have been made by some key over this payload? (Its shape, not its value.)"""
    if len(signature) != _SIGNATURE_LENGTH or not _URLSAFE.issuperset(signature):
        return False
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


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
        if f"{module}.{name}" in mailer_settings.LEGACY_EXTRA_CLASSES:
            obj = super().find_class(module, name)
            if isinstance(obj, type):  # a class the project trusts, never a function
                return obj
        raise UndecodableMessage(
            f"legacy data refers to {module}.{name}, which an email may not contain "
            "(a class of your own can be allowed with MAILER_LEGACY_EXTRA_CLASSES)"
        )


def _restricted_loads(payload: bytes) -> Any:
    # _upgrade() drops the _DroppedConnection that may stand where 2.x pickled a backend.
    return RestrictedUnpickler(io.BytesIO(payload), fix_imports=True, encoding="latin-1").load()
