"""What an email must be before it is stored on the queue: checked, and normalised to what will be sent.

Queueing (:mod:`mailer.enqueue`) and :func:`mailer.models.make_message` run :func:`validate` on every
email, so that what no send could encode is refused when the caller can still be told, not when a
sender finds it. Nothing here touches the database.
"""

from __future__ import annotations

import functools
import re
from email import errors
from email.headerregistry import AddressHeader
from email.message import Message as MimeMessage
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.message import BadHeaderError  # ValueError itself from Django 6.1
from django.utils.functional import Promise

# RFC 5322 field names: printable US-ASCII except the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
# What no header value may hold: C0 controls but the tab (newlines get their own message), DEL, the other
# characters str.splitlines() breaks at (NEL, U+2028, U+2029: the email package's modern policy, which
# Django 6 uses, refuses them as line breaks), and lone surrogates, which no charset encodes. A NUL cannot
# even be stored in PostgreSQL's log.
_BAD_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def validate(email: EmailMessage) -> None:
    """Normalise ``email`` to what will be sent, and reject what could never be sent, before anything is stored.

    Lazy text (subject, body, alternatives, header values) is evaluated now, in
    the language active while queueing, and other header values (a UUID, a
    number) become their ``str()``, as Django would write them: the sender then
    neither translates nor converts anything. What no send could encode raises
    ``ValueError`` (``BadHeaderError`` for headers and addresses). The checks
    are targeted, not a MIME build (one regex search per header value, one
    encode of non-ASCII text): about 2 microseconds per message.
    """
    for field in ("to", "cc", "bcc", "reply_to"):
        for address in getattr(email, field):
            if not isinstance(address, str):
                raise TypeError(f"{field} addresses must be strings, not {type(address).__name__}: {address!r}")
            check_address(address, field)
    if isinstance(email.from_email, Promise):
        email.from_email = str(email.from_email)
    if isinstance(email.from_email, str):
        check_address(email.from_email, "from_email")
    if email.subject is not None:
        subject = header_value("Subject", email.subject)
        if subject is not email.subject:
            email.subject = subject
    body = _text("body", email.body)
    if body is not email.body:
        email.body = body
    headers = {}
    changed = False
    for name, value in email.extra_headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise BadHeaderError(f"Invalid header name {name!r}: use printable ASCII, without spaces or ':'")
        headers[name] = header_value(name, value)
        changed = changed or headers[name] is not value
    if changed:
        email.extra_headers = headers  # a new dict: the caller's may be shared with other emails
    alternatives = getattr(email, "alternatives", None)
    if alternatives:
        checked = [_alternative(alternative) for alternative in alternatives]
        if any(new is not old for new, old in zip(checked, alternatives, strict=True)):
            email.alternatives = checked
    for attachment in email.attachments:
        # (filename, content, mimetype); a MIME part (MIMEBase, or Django 6's MIMEPart) is sent as built.
        if not isinstance(attachment, MimeMessage):
            if isinstance(attachment[0], str):
                _text("attachment's file name", attachment[0])
            _text(f"attachment {attachment[0]!r}", attachment[1])


def header_value(name: str, value: Any) -> str:
    """``value`` as the text that will be sent as header ``name``; ``BadHeaderError`` if it can't be."""
    if not isinstance(value, str):
        value = str(value)  # lazy text in the active language; a UUID or a number as Django writes it
    bad = _BAD_IN_HEADER.search(value)
    if bad is not None:
        char = bad.group()
        if char in _LINE_BREAKS:
            raise BadHeaderError(f"Header values can't contain newlines (got {value!r} for header {name!r})")
        if char >= "\ud800":
            raise BadHeaderError(f"Header {name!r} has a lone surrogate {char!r}, which can't be encoded: {value!r}")
        raise BadHeaderError(f"Header {name!r} has the control character {char!r}: {value!r}")
    if not value.isascii() and name.lower() == "message-id":
        raise BadHeaderError(f"Header {name!r} must be ASCII, as RFC 5322 requires for a msg-id: {value!r}")
    return value


def _text(what: str, value: Any) -> Any:
    """Text content forced to ``str`` if lazy; ``ValueError`` if it has a lone surrogate (no charset encodes it)."""
    if isinstance(value, Promise):
        value = str(value)
    if isinstance(value, str) and not value.isascii():  # isascii() is O(1): most mail skips the encoding
        try:
            value.encode("utf-8")  # in C, many times faster than searching for surrogates with a regex
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"The {what} has a lone surrogate {value[exc.start]!r} at position {exc.start}, which can't be encoded"
            ) from None
    return value


def _alternative(alternative: Any) -> Any:
    content, mimetype = alternative[0], alternative[1]
    checked = _text(f"{mimetype} alternative", content)
    if checked is content:
        return alternative
    if hasattr(alternative, "_replace"):  # Django 5.2's EmailAlternative named tuple
        return alternative._replace(content=checked)
    return (checked, *alternative[1:])


# RFC 5322 dot-atoms on both sides of the @, and nothing else: valid, no need to parse.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def check_address(address: str, field: str) -> None:
    """Raise ``BadHeaderError`` (a ``ValueError``) for an address no mail server could be given.

    One address, optionally with a display name (``"Ann <ann@example.org>"``),
    as Python's email package parses it. Like Django, it allows a local
    mailbox without a domain (``"webmaster"``) and obsolete but common forms
    (``"John Q. Public <john@example.org>"``).
    """
    if _BARE_ADDRESS.fullmatch(address):
        return  # the common case, checked without the (slow) parser
    if "\n" in address or "\r" in address:
        raise BadHeaderError(f"Addresses can't contain newlines (got {address!r} in {field})")
    if not address.isascii() and _SURROGATE.search(address):
        raise BadHeaderError(f"Invalid address {address!r} in {field}: a lone surrogate can't be encoded")
    problems = _address_problems(address)
    if problems:
        raise BadHeaderError(f"Invalid address {address!r} in {field}: {'; '.join(problems)}")


@functools.lru_cache(maxsize=1024)
def _address_problems(address: str) -> tuple[str, ...]:
    """What Python's email package finds wrong with ``address`` (cached: senders repeat)."""
    try:
        parsed = AddressHeader.value_parser(address)
        mailboxes = parsed.all_mailboxes
        problems = [
            str(defect)
            for defect in parsed.all_defects
            if isinstance(defect, errors.NonPrintableDefect)
            or (isinstance(defect, errors.InvalidHeaderDefect) and "local part with no domain" not in str(defect))
        ]
    except Exception as exc:  # the parser fails on some invalid input instead of reporting a defect
        mailboxes, problems = [], [f"unparsable ({exc.__class__.__name__})"]
    if not problems and len(mailboxes) != 1:
        problems = ["not exactly one address"]
    elif not problems and not mailboxes[0].addr_spec:
        problems = ["no address"]
    return tuple(problems)
