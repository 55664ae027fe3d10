"""Large attachments kept out of the queue row: in a Django storage (``MAILER_STORAGE``).

When ``MAILER_STORAGE`` names an alias of Django's ``STORAGES``, queueing
(:func:`offload`) saves each attachment larger than ``MAILER_STORAGE_THRESHOLD``
bytes there and pickles a :class:`StoredAttachment` (alias, file name, size)
in its place: the row stays a few kilobytes, whatever the attachments. The
sender reads the content back when the message's turn comes (:func:`load`) and
lets it go once the message is dealt with (:func:`unload`); the
content it gets is :class:`StoredBytes` (or :class:`StoredText`), which pickles
(and so is logged) as the reference again, not as the content.

A file is deleted once no queue or log row refers to it (:func:`release`,
after the commit that removed the last row): after sending when the log keeps
no message data, when the log entries are purged otherwise, and when rows are
deleted through the ORM (the admin included). Which rows may refer to a file
is narrow: the message's queue row and its log rows, which all carry the
``when_added`` of the queued message; the reference's text is looked for in
their base64 data (:func:`_base64_needles`), with no unpickling.

References are only read from signed data; the restricted unpickler of
django-mailer 2.x rows does not build them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import logging
import pickletools
import re
import uuid
from collections.abc import Iterable
from email.mime.base import MIMEBase
from typing import Any

from django.apps import apps
from django.core.files.base import ContentFile
from django.core.files.storage import InvalidStorageError, storages
from django.db import models, router, transaction

from mailer import serialization
from mailer.conf import mailer_settings

logger = logging.getLogger(__name__)

DIRECTORY = "mailer-attachments/"
# What a reference looks like inside a pickle: this prefix, the alias, a newline, the file's name.
TOKEN_PREFIX = "mailer-storage\n"


class AttachmentUnavailable(serialization.NotDecodableHere):
    """A stored attachment that this process cannot read (no such alias or file here, storage down).

    The message stays queued and is passed over (see docs/errors.rst): the file
    may be on a storage other senders see, or come back.
    """


class StoredAttachment:
    """What the queued email holds instead of an attachment's content: where that content is kept."""

    __slots__ = ("alias", "name", "size", "text")

    def __init__(self, token: str, size: int, text: bool = False) -> None:
        if not token.startswith(TOKEN_PREFIX):
            raise ValueError(f"not a stored attachment reference: {token!r}")
        self.alias, _newline, self.name = token[len(TOKEN_PREFIX) :].partition("\n")
        self.size = size
        self.text = text  # the content was text (str), stored as UTF-8

    @property
    def token(self) -> str:
        return f"{TOKEN_PREFIX}{self.alias}\n{self.name}"

    def __reduce__(self) -> tuple:
        return (StoredAttachment, (self.token, self.size, self.text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredAttachment) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)

    def __repr__(self) -> str:
        return f"<attachment of {self.size:,} bytes in storage {self.alias!r}: {self.name}>"

    def read(self) -> bytes:
        """The stored content; :class:`AttachmentUnavailable` if it cannot be read here."""
        try:
            with storages[self.alias].open(self.name, "rb") as file:
                return file.read()
        except InvalidStorageError:
            raise AttachmentUnavailable(
                f"an attachment is kept in storage {self.alias!r}, which is not in this process's STORAGES"
            ) from None
        except Exception as exc:
            raise AttachmentUnavailable(
                f"the attachment {self.name} cannot be read from storage {self.alias!r} ({exc!r}): every sender "
                "must see the storage the mail was queued with; a message whose file is gone can be deleted "
                "in the admin"
            ) from exc

    def content(self) -> StoredBytes | StoredText:
        data = self.read()
        return StoredText(data.decode(), self) if self.text else StoredBytes(data, self)


class _PicklesAsReference:
    """Content read back from storage: pickled and copied as its reference, so the log copy stays small."""

    reference: StoredAttachment

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return self.reference.__reduce__()

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


class StoredBytes(_PicklesAsReference, bytes):
    def __new__(cls, data: bytes, reference: StoredAttachment) -> StoredBytes:
        obj = super().__new__(cls, data)
        obj.reference = reference
        return obj


class StoredText(_PicklesAsReference, str):
    def __new__(cls, data: str, reference: StoredAttachment) -> StoredText:
        obj = super().__new__(cls, data)
        obj.reference = reference
        return obj


def _with_content(item: Any, content: Any) -> Any:
    replace = getattr(item, "_replace", None)  # Django 5.2's EmailAttachment
    return replace(content=content) if replace is not None else (item[0], content, item[2])


def _attachment_parts(item: Any) -> tuple[Any, Any, Any] | None:
    if isinstance(item, MIMEBase) or not isinstance(item, tuple) or len(item) != 3:
        return None
    return item


def offload(email: Any) -> tuple[Any, list[StoredAttachment]]:
    """``email`` with its attachments above the threshold saved to ``MAILER_STORAGE``, and what was saved.

    The caller's email is left as it is (a shallow copy is returned when
    anything was stored); without ``MAILER_STORAGE``, ``email`` itself.
    """
    alias = mailer_settings.STORAGE
    attachments = getattr(email, "attachments", None)
    if not alias or not attachments:
        return email, []
    threshold = int(mailer_settings.STORAGE_THRESHOLD)
    stored: list[StoredAttachment] = []
    kept = []
    try:
        for item in attachments:
            parts = _attachment_parts(item)
            content = parts[1] if parts is not None else None
            if isinstance(content, StoredAttachment):  # queued again from a decoded row: a file of its own
                content = content.content()
            if isinstance(content, str):
                raw, text = content.encode(), True
            elif isinstance(content, (bytes, bytearray, memoryview)):
                raw, text = bytes(content), False
            else:
                kept.append(item)
                continue
            if len(raw) <= threshold:
                kept.append(item)
                continue
            name = storages[alias].save(f"{DIRECTORY}{uuid.uuid4().hex}", ContentFile(raw))
            reference = StoredAttachment(f"{TOKEN_PREFIX}{alias}\n{name}", len(raw), text)
            stored.append(reference)
            kept.append(_with_content(item, reference))
    except BaseException:
        discard(stored)
        raise
    if not stored:
        return email, []
    clone = copy.copy(email)
    clone.attachments = kept
    return clone, stored


def references(email: Any) -> list[StoredAttachment]:
    """The stored attachments of a decoded ``email`` (nothing is read)."""
    found = []
    for item in getattr(email, "attachments", None) or ():
        parts = _attachment_parts(item)
        if parts is not None and isinstance(parts[1], StoredAttachment):
            found.append(parts[1])
    return found


def load(email: Any) -> None:
    """Read the stored attachments of a decoded ``email`` into it, when it is about to be sent.

    Raises :class:`AttachmentUnavailable` if one cannot be read.
    """
    attachments = getattr(email, "attachments", None) or []
    for i, item in enumerate(attachments):
        parts = _attachment_parts(item)
        if parts is not None and isinstance(parts[1], StoredAttachment):
            attachments[i] = _with_content(item, parts[1].content())


def unload(email: Any) -> None:
    """Put the references back in place of the content :func:`load` read: a dealt-with message holds no file."""
    attachments = getattr(email, "attachments", None) or []
    for i, item in enumerate(attachments):
        parts = _attachment_parts(item)
        if parts is not None and isinstance(parts[1], _PicklesAsReference):
            attachments[i] = _with_content(item, parts[1].reference)


def encoded_size(references: Iterable[StoredAttachment]) -> int:
    """What the stored attachments add to the mail, base64-encoded as they are sent."""
    return sum(-(-reference.size // 3) * 4 for reference in references)


def discard(references: Iterable[StoredAttachment]) -> None:
    """Delete these files now, whatever refers to them (queueing failed: nothing was stored)."""
    for reference in references:
        _delete(reference)


# Finding references in stored rows, without unpickling.


def _base64_needles(raw: bytes) -> list[str]:
    """Strings, one of which the base64 of any bytes containing ``raw`` contains (whatever its offset)."""
    needles = []
    for skip in range(3):
        part = raw[skip:]
        part = part[: len(part) - len(part) % 3]
        if part:
            needles.append(base64.b64encode(part).decode("ascii"))
    return needles


_PREFIX_NEEDLES = _base64_needles(TOKEN_PREFIX.encode())


def may_refer(data: Any) -> bool:
    """Could this row data hold a reference? (Cheap: a substring search.)"""
    return isinstance(data, str) and data.startswith(serialization.PREFIX) and any(n in data for n in _PREFIX_NEEDLES)


def tokens_in(data: Any) -> set[str]:
    """The references held by signed row ``data``, read from the pickle's opcodes (nothing is built)."""
    if not may_refer(data):
        return set()
    raw = serialization.signed_pickle(data)
    if raw is None:
        return set()
    try:
        return {arg for _op, arg, _pos in pickletools.genops(raw) if isinstance(arg, str) and _OUR_TOKEN.match(arg)}
    except Exception:
        return set()


# Only names that offload() makes: the mail's own text (a subject, a body) may be any string, this prefix
# included, and must never name a file to delete. A name of 128 random bits cannot be guessed.
_OUR_TOKEN = re.compile(rf"{re.escape(TOKEN_PREFIX)}[^\n]+\n{re.escape(DIRECTORY)}[0-9a-f]{{32}}\Z")


def referring_rows(queryset: models.QuerySet) -> models.QuerySet:
    """The rows of ``queryset`` whose data may hold a reference, as ``(message_data, when_added)``."""
    query = models.Q()
    for needle in _PREFIX_NEEDLES:
        query |= models.Q(message_data__contains=needle)
    return queryset.filter(query).values_list("message_data", "when_added")


Held = Iterable[tuple[str, datetime.datetime | None]]


def release(held: Held, using: str) -> None:
    """Once the current transaction commits, delete the files of ``held`` that no row refers to any more.

    ``held``: (token, ``when_added`` of the rows that may refer to it).
    """
    held = dict(held)
    if held:
        transaction.on_commit(lambda: _delete_unreferenced(held, using), using=using)


def tokens_of_rows(rows: Iterable[tuple[Any, datetime.datetime | None]]) -> list[tuple[str, Any]]:
    return [(token, when_added) for data, when_added in rows for token in tokens_in(data)]


def _delete_unreferenced(held: dict[str, datetime.datetime | None], using: str) -> None:
    for token, when_added in held.items():
        try:
            if _still_referenced(token, when_added, using):
                continue
            _delete(StoredAttachment(token, 0))
        except Exception:
            logger.exception("could not check or delete the stored attachment %r", token)


def _still_referenced(token: str, when_added: datetime.datetime | None, using: str) -> bool:
    query = models.Q()
    for needle in _base64_needles(token.encode()):
        query |= models.Q(message_data__contains=needle)
    for name in ("Message", "MessageLog"):
        rows = apps.get_model("mailer", name)._default_manager.using(using).filter(query)
        if when_added is not None:
            rows = rows.filter(when_added=when_added)
        if rows.exists():
            return True
    return False


def _delete(reference: StoredAttachment) -> None:
    try:
        storages[reference.alias].delete(reference.name)
    except Exception:
        logger.exception("could not delete the stored attachment %s from storage %r", reference.name, reference.alias)


def delete_with_files(obj: models.Model, delete: Any, *args: Any, **kwargs: Any) -> Any:
    """``obj.delete()`` of a queue or log row, then the files in ``MAILER_STORAGE`` that it alone referred to."""
    if not mailer_settings.STORAGE:
        return delete(*args, **kwargs)
    using = kwargs.get("using") or router.db_for_write(type(obj), instance=obj)
    held = tokens_of_rows([(obj.message_data, obj.when_added)])
    result = delete(*args, **kwargs)
    release(held, using)
    return result
