"""The staging switch: ``MAILER_REDIRECT_TO`` sends every message to a fixed list of addresses instead.

It is applied when a message is handed to the real backend (:class:`mailer.passes.Pass` calls
:func:`redirect` just before the delivery and :meth:`Redirect.undo` as soon as it has finished), not
when mail is queued: a production queue copied to a staging server never reaches the people it was for,
whichever process sends it (``send_mail``, ``runmailer``, ``runmailer_pg``, a task, the admin action).

For its delivery the email's To is the redirect list, its Cc and Bcc are empty (so the relay is given the
redirect addresses alone, as envelope recipients and in the headers), and its original recipients go in
``X-Mailer-Original-To``, ``-Cc`` and ``-Bcc`` headers. Afterwards the email is put back as it was (with
whatever the backend added to it), so the log keeps the original recipients (an admin search by them finds
the row) and says in its text where the message went (:func:`note_for`).

The don't-send list is applied before this, to the original recipients, as in production: a message
production would not send is not sent on staging either, and the redirect addresses are not looked up.

A value that is not a non-empty list of addresses never means "off": the senders refuse to send
(``ImproperlyConfigured``) and ``manage.py check`` reports ``mailer.E017``.
"""

from __future__ import annotations

import dataclasses
from email.utils import formataddr, parseaddr
from typing import Any, TypeVar

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from mailer import smtp
from mailer.addresses import address_key
from mailer.conf import mailer_settings
from mailer.validation import check_address

SETTING = "MAILER_REDIRECT_TO"
# The header each original recipient list goes in, by EmailMessage attribute (only when the list is not empty).
HEADERS = {"to": "X-Mailer-Original-To", "cc": "X-Mailer-Original-Cc", "bcc": "X-Mailer-Original-Bcc"}
# Extra headers left out of a redirected delivery: Django writes "To" and "Cc" ones instead of the lists.
_LEFT_OUT = {"to", "cc", *(name.lower() for name in HEADERS.values())}
_MISSING = object()

# What the log says of each email being redirected, by id() (read by mailer.logrows.log_fields), with the email
# itself so that its id() is not reused meanwhile. By id, not in a WeakKeyDictionary: an EmailMessage subclass
# may well be unhashable. Entries go when the pass is done with the message (Redirect.forget()).
_NOTES: dict[int, tuple[EmailMessage, str]] = {}

T = TypeVar("T")


def redirect_to() -> tuple[str, ...] | None:
    """The addresses of ``MAILER_REDIRECT_TO``, or None when it is not set (mail goes to its recipients).

    Raises ``ImproperlyConfigured`` for any other value that is not a valid list: a sender must never
    fall back to the real recipients because of a typo in the setting.
    """
    value = mailer_settings.REDIRECT_TO
    if value is None:
        return None
    problem = _problem(value)
    if problem is not None:
        raise ImproperlyConfigured(f"{SETTING} {problem}; no mail is sent until it is fixed.")
    return tuple(value)


def _problem(value: Any) -> str | None:
    """What is wrong with a ``MAILER_REDIRECT_TO`` that is not None (None: nothing)."""
    if not isinstance(value, (list, tuple)):
        return f"is {value!r}: it must be a list of addresses, or None to send mail to its recipients"
    if not value:
        return "is empty: it must name at least one address, or be None to send mail to its recipients"
    for address in value:
        if not isinstance(address, str):
            return f"holds {address!r}, which is not a string"
        try:
            check_address(address, SETTING)
        except ValueError as exc:
            return f"holds an invalid address: {exc}"
        if "@" not in address_key(address):
            return f"holds {address!r}, which has no domain"
    return None


@checks.register()
def check_redirect(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    value = mailer_settings.REDIRECT_TO
    problem = None if value is None else _problem(value)
    if problem is None:
        return []
    hint = 'For example ["qa@example.com"]; None (the default) sends mail to its recipients.'
    return [checks.Error(f"{SETTING} {problem}.", hint=hint, id="mailer.E017")]


def notice() -> str | None:
    """What the commands say of ``MAILER_REDIRECT_TO`` when it is set (None when it is not)."""
    try:
        addresses = redirect_to()
    except ImproperlyConfigured as exc:
        return str(exc)
    if addresses is None:
        return None
    return f"{SETTING} is set: every message goes to {', '.join(addresses)} instead of its recipients."


@dataclasses.dataclass
class Redirect:
    """How an email was before :func:`redirect`, to put it back with :meth:`undo`."""

    email: EmailMessage
    to: list[str]
    cc: list[str]
    bcc: list[str]
    headers: dict[str, Any]  # the email's extra headers before
    sent_headers: dict[str, Any]  # a copy of those it was handed to the backend with

    def undo(self, refusals: list[smtp.Refusal]) -> list[smtp.Refusal]:
        """Put the email back as it was, keeping the headers the backend added; the ``refusals`` left to act on.

        The relay refused redirect addresses, not the message's recipients: those refusals are said in the
        log's text instead, and nothing is retried for them (the others got the message).
        """
        email = self.email
        headers = dict(self.headers)
        for name, value in email.extra_headers.items():
            if self.sent_headers.get(name, _MISSING) != value:
                headers[name] = value  # set by the backend while it sent
        email.extra_headers = headers
        email.to, email.cc, email.bcc = self.to, self.cc, self.bcc
        if refusals:
            _NOTES[id(email)] = (email, f"{note_for(email)}\n{smtp.describe(refusals)}")
        return []

    def forget(self) -> None:
        """The pass is done with the message: its log rows are written, the note is not needed any more."""
        _NOTES.pop(id(self.email), None)

    def judged(self, outcome: T) -> T:
        """``outcome`` (a :class:`~mailer.outcomes.Outcome`) without don't-send entries: a relay's refusal of a
        redirect address says nothing about the message's own recipients."""
        if getattr(outcome, "block", ()):
            return dataclasses.replace(outcome, block=())  # type: ignore[type-var]
        return outcome


def redirect(email: EmailMessage, addresses: tuple[str, ...]) -> Redirect:
    """Address ``email`` (in place) to ``addresses`` alone, its original recipients in ``X-Mailer-Original-*``."""
    saved = Redirect(email, email.to, email.cc, email.bcc, email.extra_headers, {})
    headers = {name: value for name, value in email.extra_headers.items() if name.lower() not in _LEFT_OUT}
    for field, name in HEADERS.items():
        original = getattr(email, field)
        if original:
            headers[name] = ", ".join(map(_ascii, original))
    email.extra_headers = headers
    saved.sent_headers = dict(headers)
    email.to, email.cc, email.bcc = list(addresses), [], []
    _NOTES[id(email)] = (email, f"redirected to {', '.join(addresses)} ({SETTING})")
    return saved


def _ascii(address: Any) -> str:
    """``address`` for a header, its display name RFC 2047-encoded if it is not ASCII.

    Django (before 6) encodes a non-ASCII value of an extra header as a whole, which readers then show with
    a leading space; an encoded name keeps the value ASCII, and every mail reader decodes it.
    """
    address = str(address)
    if address.isascii():
        return address
    name, addr = parseaddr(address)
    if not addr or not name or name.isascii() or not addr.isascii():
        return address  # an address itself not ASCII: the value is sent as Django writes it
    return formataddr((name, addr), charset="utf-8")


def note_for(email: EmailMessage | None) -> str:
    """What the log must say of ``email`` if it was redirected ("" otherwise)."""
    if not _NOTES or email is None:
        return ""
    found = _NOTES.get(id(email))
    return found[1] if found is not None and found[0] is email else ""
