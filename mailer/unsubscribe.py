"""One-click unsubscribe (RFC 8058): signed links for one recipient, and the headers that carry them.

A link holds the recipient's address, normalised as the don't-send list stores it
(:func:`~mailer.addresses.entry_key`), signed with ``SECRET_KEY`` under a salt of its own and stamped with the
time it was made (:mod:`django.core.signing`). The view behind it (:func:`mailer.views.unsubscribe`) puts
that address, and no other, on the don't-send list; a link altered in any way, made with another key or older
than ``MAILER_UNSUBSCRIBE_MAX_AGE`` is refused. Nothing is stored when a link is made.

``List-Unsubscribe`` must reach the mailbox provider as a plain ``<https://...>``: Gmail ignores a value
encoded as RFC 2047 words, which is what Python's email package (and so Django 6) makes of a header with a
word longer than a line. The value is therefore a :class:`ListUnsubscribeValue`, which folds itself between
its links only, never inside one (a line of a header may hold up to 998 characters).
"""

from __future__ import annotations

import datetime
import re
import sys
import zlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks, signing
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.urls import NoReverseMatch, get_script_prefix, reverse

from mailer.addresses import address_key, entry_key
from mailer.conf import mailer_settings

SALT = "mailer.unsubscribe"
URL_NAME = "mailer:unsubscribe"
HEADER = "List-Unsubscribe"
POST_HEADER = "List-Unsubscribe-Post"
ONE_CLICK = "List-Unsubscribe=One-Click"  # the body of the POST (RFC 8058), and the value of POST_HEADER
DOCS = "See 'One-click unsubscribe' in django-mailer's documentation."

_LINK = re.compile(r"<[^<>\s]+>")
_MAILTO = re.compile(r"[^\s<>()\[\],;:\\\"?&=%@]+@[A-Za-z0-9.-]+")


class ListUnsubscribeValue(str):
    """The value of a ``List-Unsubscribe`` header that Python's email package writes as it is.

    A header object of :mod:`email.headerregistry` would fold a long link into encoded words; this string
    has what the email policies look for in a header object (``name`` and ``fold()``), so a message of
    Django 6 keeps it and writes it with :meth:`fold`. Django 5.2 and older write headers with the older
    policy, which folds at spaces only and needs nothing of it. It pickles as a plain string subclass.
    """

    __slots__ = ()
    name = HEADER

    def __new__(cls, value: str) -> ListUnsubscribeValue:
        if "\r" in value or "\n" in value:
            raise ValueError(f"Header values can't contain newlines (got {value!r} for header {HEADER!r})")
        if not value.isascii():
            raise ValueError(f"{HEADER} must be ASCII (links percent-encoded), not {value!r}")
        return super().__new__(cls, value)

    def fold(self, *, policy: Any) -> str:
        """``List-Unsubscribe: <a>, <b>`` and a line separator, the links cut at no point.

        A second link goes on a line of its own when both do not fit within the policy's line length.
        """
        links = _LINK.findall(self)
        if ", ".join(links) != str(self):
            links = [str(self)]
        width = policy.max_line_length or sys.maxsize
        lines, line = [], f"{self.name}: {links[0]}"
        for link in links[1:]:
            if len(line) + 2 + len(link) <= width:
                line = f"{line}, {link}"
            else:
                lines.append(f"{line},")
                line = f" {link}"
        return policy.linesep.join([*lines, line]) + policy.linesep


# --- Tokens -------------------------------------------------------------------------------------------------


def make_token(address: str) -> str:
    """A signed, time-stamped token for ``address`` (any case, with or without a display name)."""
    key = entry_key(address)
    if "@" not in key:
        raise ValueError(f"Not an email address: {address!r}")
    max_age()  # a bad setting is reported when links are made, not when they are followed
    return signing.dumps(key, salt=SALT)


def address_from_token(token: str) -> str:
    """The address ``token`` was made for. Raises :class:`django.core.signing.BadSignature` for a token
    altered, forged or made with an unknown key, and ``SignatureExpired`` (a subclass) for one too old."""
    limit = max_age()
    try:
        key = signing.loads(token, salt=SALT, max_age=limit)
    except (ValueError, zlib.error) as exc:  # signed with the key but not made here (no timestamp, not JSON)
        raise signing.BadSignature(f"Not an unsubscribe token: {exc}") from exc
    if not isinstance(key, str) or "@" not in key:
        raise signing.BadSignature("The token holds no address.")
    return key


# --- Settings -----------------------------------------------------------------------------------------------


def max_age() -> float | None:
    """``MAILER_UNSUBSCRIBE_MAX_AGE`` in seconds (``None``: links never expire)."""
    value = mailer_settings.UNSUBSCRIBE_MAX_AGE
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        return value
    raise ImproperlyConfigured(
        f"MAILER_UNSUBSCRIBE_MAX_AGE is {mailer_settings.UNSUBSCRIBE_MAX_AGE!r}; "
        "it must be a number of seconds above 0, a timedelta, or None."
    )


def base_url() -> str:
    """``MAILER_UNSUBSCRIBE_BASE_URL`` without its trailing slash. Raises ``ImproperlyConfigured``."""
    value = mailer_settings.UNSUBSCRIBE_BASE_URL
    if not value:
        raise ImproperlyConfigured(
            "MAILER_UNSUBSCRIBE_BASE_URL is not set: unsubscribe links need the https address of the site, "
            "such as 'https://example.com'."
        )
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"MAILER_UNSUBSCRIBE_BASE_URL is {value!r}; it must be an https address without query or fragment, "
            "such as 'https://example.com' (RFC 8058 requires https)."
        )
    if not value.isascii() or any(c.isspace() or c in "<>\"'" for c in value):
        raise ImproperlyConfigured(f"MAILER_UNSUBSCRIBE_BASE_URL is {value!r}; write it in ASCII, percent-encoded.")
    return value.rstrip("/")


def mailto_link() -> str | None:
    """``mailto:<MAILER_UNSUBSCRIBE_MAILTO>?subject=unsubscribe``, or None when the setting is empty."""
    value = mailer_settings.UNSUBSCRIBE_MAILTO
    if not value:
        return None
    address = value.removeprefix("mailto:") if isinstance(value, str) else None
    if address is None or not _MAILTO.fullmatch(address):
        raise ImproperlyConfigured(
            f"MAILER_UNSUBSCRIBE_MAILTO is {value!r}; it must be a plain ASCII address, such as "
            "'unsubscribe@example.com'."
        )
    return f"mailto:{address}?subject=unsubscribe"


# --- Links and headers --------------------------------------------------------------------------------------


def unsubscribe_url(address: str) -> str:
    """The https link that unsubscribes ``address``: ``MAILER_UNSUBSCRIBE_BASE_URL`` and the path of
    ``mailer.urls`` in the project's URLs.

    The path is taken without the script prefix of the running process, so that a sender (which has none)
    and a web process under a sub-path make the same link; put a sub-path the site is served under in
    ``MAILER_UNSUBSCRIBE_BASE_URL``.
    """
    base = base_url()
    try:
        path = reverse(URL_NAME, kwargs={"token": make_token(address)})
    except NoReverseMatch:
        raise ImproperlyConfigured(
            "Unsubscribe links need the view: add path('mailer/', include('mailer.urls')) to your URLs."
        ) from None
    prefix = get_script_prefix()
    path = path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
    return f"{base}/{path}"


def unsubscribe_headers(address: str) -> dict[str, str]:
    """The ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers of a message to ``address`` alone.

    For ``headers=`` of :class:`~django.core.mail.EmailMessage`, :func:`mailer.send_mail` and friends.
    """
    links = [f"<{unsubscribe_url(address)}>"]
    mailto = mailto_link()
    if mailto is not None:
        links.append(f"<{mailto}>")
    return {HEADER: ListUnsubscribeValue(", ".join(links)), POST_HEADER: ONE_CLICK}


def add_unsubscribe_headers(message: EmailMessage, address: str | None = None) -> EmailMessage:
    """Give ``message`` the one-click unsubscribe headers of ``address`` (by default its only recipient).

    ``address`` must be one of the message's recipients (to, cc or bcc): the link unsubscribes whoever it
    was made for, so a message to several people must name the one it is for. Replaces such headers the
    message had (in any case). ``message.extra_headers`` is replaced, not changed, so a dict of headers
    shared by several messages keeps its content. Returns ``message``.
    """
    recipients = _distinct(message.recipients())
    if address is None:
        if len(recipients) != 1:
            raise ValueError(f"The message has {len(recipients)} recipients; name the one the unsubscribe link is for.")
        address = recipients[0]
    elif address_key(address) not in recipients:
        raise ValueError(f"{address!r} is not a recipient of the message.")
    headers = {
        name: value
        for name, value in message.extra_headers.items()
        if name.lower() not in (HEADER.lower(), POST_HEADER.lower())
    }
    message.extra_headers = {**headers, **unsubscribe_headers(address)}
    return message


def _distinct(addresses: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(address_key(address) for address in addresses))


# --- System check -------------------------------------------------------------------------------------------


@checks.register(checks.Tags.urls)
def check_unsubscribe(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With the view routed or a setting given, links must be possible: a base URL, the view, good settings."""
    routed = _routed()
    configured = bool(mailer_settings.UNSUBSCRIBE_BASE_URL or mailer_settings.UNSUBSCRIBE_MAILTO)
    if not (routed or configured):
        return []
    errors = []
    try:
        base_url()
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), hint=DOCS, id="mailer.E018"))
    if not routed:
        hint = "Add path('mailer/', include('mailer.urls')) to your URLs. " + DOCS
        message = "Unsubscribe settings are given but mailer.urls is not in the project's URLs."
        errors.append(checks.Error(message, hint=hint, id="mailer.E018"))
    for read in (max_age, mailto_link):
        try:
            read()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), hint=DOCS, id="mailer.E019"))
    return errors


def _routed() -> bool:
    if not getattr(settings, "ROOT_URLCONF", None):  # a project that serves no pages (a sending worker's settings)
        return False
    try:
        reverse(URL_NAME, kwargs={"token": "x"})
    except NoReverseMatch:
        return False
    return True
