"""What a decoded email is made of, as a person reads it: addresses, headers, text, HTML, attachments.

The admin's message pages (:mod:`mailer.admin_email`) show these; nothing here renders HTML or reads a
request. An email is whatever the queue or the log decoded (:attr:`Message.email
<mailer.models.Message.email>`): Django's ``EmailMessage`` or a subclass, queued by any Django version
since 2.x, whose attachments may be ``(name, content, type)`` tuples, Django 5.2's named tuples, MIME parts,
or references to files kept in ``MAILER_STORAGE`` (:class:`mailer.storage.StoredAttachment`). A value that
does not fit is shown as best it can be, never raised on: a page about a strange row must still open.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from email.message import Message as MimeMessage
from typing import Any

from mailer import storage

HTML = "text/html"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Attachment:
    """One attachment of an email: its place in ``email.attachments``, file name, content type and size."""

    index: int
    name: str
    content_type: str
    size: int | None  # bytes; None when it cannot be known without reading more than the row
    stored: bool = False  # kept in MAILER_STORAGE, read when downloaded


def addresses(email: Any, field: str) -> list[str]:
    """The addresses of ``email``'s ``to``, ``cc``, ``bcc`` or ``reply_to``, as text (``[]`` when missing)."""
    value = getattr(email, field, None) or []
    if isinstance(value, str):
        return [value]
    return [str(address) for address in value]


def recipients(email: Any) -> list[str]:
    """Every recipient of ``email``: to, then cc, then bcc."""
    return [*addresses(email, "to"), *addresses(email, "cc"), *addresses(email, "bcc")]


def headers(email: Any) -> list[tuple[str, str]]:
    """The headers the email carries (``extra_headers``: those its sender set, the Message-ID, what a backend
    added), in their order; the addresses and subject are fields of their own."""
    extra = getattr(email, "extra_headers", None) or {}
    try:
        return [(str(name), str(value)) for name, value in extra.items()]
    except AttributeError:
        return []


def _is_text(email: Any, subtype: str) -> bool:
    return getattr(email, "content_subtype", "plain") == subtype


def text_part(email: Any) -> str | None:
    """The plain text body (``None`` when the body is HTML: ``content_subtype = "html"``)."""
    body = getattr(email, "body", None)
    if body is None or _is_text(email, "html"):
        return None
    return str(body)


def html_part(email: Any) -> str | None:
    """The HTML of ``email``: its first ``text/html`` alternative, or its body if that is HTML; else ``None``."""
    if _is_text(email, "html") and getattr(email, "body", None) is not None:
        return str(email.body)
    for item in getattr(email, "alternatives", None) or ():
        try:
            content, mimetype = item[0], item[1]
        except (TypeError, IndexError, KeyError):
            continue
        if str(mimetype).split(";")[0].strip().lower() == HTML:
            return content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    return None


def _parts(item: Any) -> tuple[Any, Any, Any] | None:
    """(name, content, type) of a tuple attachment (Django 5.2's ``EmailAttachment`` is a tuple too)."""
    if isinstance(item, tuple) and len(item) == 3:
        return item
    return None


def _guess_type(name: str | None) -> str:
    return (mimetypes.guess_type(name)[0] if name else None) or OCTET_STREAM


def attachments(email: Any) -> list[Attachment]:
    """The attachments of ``email``, without reading any file kept in ``MAILER_STORAGE`` (its size is known)."""
    found = []
    for index, item in enumerate(getattr(email, "attachments", None) or ()):
        if isinstance(item, MimeMessage):
            payload = item.get_payload(decode=True)
            name = item.get_filename() or ""
            found.append(Attachment(index, name, item.get_content_type(), len(payload) if payload else None))
            continue
        parts = _parts(item)
        if parts is None:
            continue
        name, content, mimetype = parts
        name = str(name) if name else ""
        mimetype = str(mimetype) if mimetype else _guess_type(name)
        if isinstance(content, storage.StoredAttachment):
            found.append(Attachment(index, name, mimetype, content.size, stored=True))
        elif isinstance(content, str):
            found.append(Attachment(index, name, mimetype, len(content.encode())))
        elif isinstance(content, (bytes, bytearray)):
            found.append(Attachment(index, name, mimetype, len(content)))
        else:
            found.append(Attachment(index, name, mimetype, None))
    return found


def attachment_content(email: Any, index: int) -> tuple[Attachment, bytes] | None:
    """Attachment ``index`` of ``email`` and its content as bytes (``None``: no such attachment).

    A file kept in ``MAILER_STORAGE`` is read now; raises
    :class:`~mailer.storage.AttachmentUnavailable` when it cannot be.
    """
    described = {attachment.index: attachment for attachment in attachments(email)}
    if index not in described:
        return None
    item = email.attachments[index]
    if isinstance(item, MimeMessage):
        return described[index], item.get_payload(decode=True) or b""
    content = item[1]
    if isinstance(content, storage.StoredAttachment):
        content = content.read()
    if isinstance(content, str):
        content = content.encode()
    if not isinstance(content, (bytes, bytearray)):
        return None
    return described[index], bytes(content)
