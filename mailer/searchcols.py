"""What the admin's search reads: a message's recipients and subject, stored as plain columns when it is written.

Queue rows (:class:`~mailer.models.Message`) and log rows (:class:`~mailer.models.MessageLog`) carry
``recipients`` (every address of To, Cc and Bcc, as :func:`~mailer.addresses.address_key` gives it: the
address alone, lower-cased, separated by one space) and ``subject_text`` (the subject as it was sent).
A log row also has its first address in ``recipient``, which is indexed, and each of its other addresses in
a :class:`~mailer.recipients.LogRecipient` row, indexed too: a search by an exact address reads those two
indexes, not the log (most mail has one recipient, and costs the log no more than that column's index).

Rows written before migration 0016, or by a django-mailer 2.x process during the upgrade, have NULL in
both columns: :func:`mailer.searchfill.fill` (the ``mailer_fill_search`` command) decodes them once, in batches.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext_lazy as _

from mailer.addresses import address_key

ADDRESS_LENGTH = 254  # the indexed address columns' max_length: an index every database takes (utf8mb4 included)
RECIPIENT_INDEX = "mailer_log_recipient_idx"  # MessageLog.recipient (migration 0016)
RECIPIENTS_LENGTH = 16000  # characters kept of the recipients column: at four bytes each, they fit MySQL's TEXT
SUBJECT_LENGTH = 998  # a header line's limit (RFC 5322)


def search_columns(email: Any) -> dict[str, str | None]:
    """``{"recipients": ..., "subject_text": ...}`` for ``email`` (an ``EmailMessage``, or None: both None).

    Every sender calls it for every message it logs: the common case (one address) takes the short way.
    """
    if email is None:
        return {"recipients": None, "subject_text": None}
    to, cc, bcc = getattr(email, "to", None) or (), getattr(email, "cc", None) or (), getattr(email, "bcc", None) or ()
    if len(to) == 1 and not cc and not bcc:
        recipients = address_key(str(to[0]))
    else:
        found = map(address_key, map(str, [*to, *cc, *bcc]))
        recipients = " ".join(dict.fromkeys(key for key in found if key))
    subject = _text(getattr(email, "subject", ""))
    return {"recipients": _text(recipients)[:RECIPIENTS_LENGTH], "subject_text": subject[:SUBJECT_LENGTH]}


def log_columns(email: Any) -> dict[str, str | None]:
    """:func:`search_columns` and ``recipient`` (the first address, indexed) of a log row for ``email``."""
    columns = search_columns(email)
    found = addresses(columns["recipients"])
    columns["recipient"] = found[0] if found else None
    return columns


def addresses(recipients: str | None) -> list[str]:
    """The addresses of a ``recipients`` column, cut to what the indexed columns hold.

    The first is a log row's ``recipient``; the others, its :class:`~mailer.recipients.LogRecipient` rows.
    """
    if not recipients:
        return []
    if " " not in recipients and len(recipients) <= ADDRESS_LENGTH:
        return [recipients]  # the common case, one address
    return list(dict.fromkeys(address[:ADDRESS_LENGTH] for address in recipients.split()))


def address_term(term: str) -> str | None:
    """The address a search term names, as the columns store it; None when the term is not one address.

    One word with an ``@`` (``bob@example.com``), or a name and an address (``Bob <bob@example.com>``); not
    one in angle brackets alone (``<...@...>`` is how a Message-ID is written).
    """
    term = term.strip()
    if "@" not in term or term.startswith("<"):
        return None
    if len(term.split()) > 1 and not (term.endswith(">") and "<" in term):
        return None
    key = address_key(term)
    return key[:ADDRESS_LENGTH] if "@" in key else None


def _text(value: Any) -> str:
    """``value`` as a plain ``str`` on one line, without NUL (which PostgreSQL refuses)."""
    if type(value) is not str:  # lazy text, SafeString and other subclasses: the drivers want the plain type
        value = "" if value is None else str.__str__(str(value))
    if not value.isprintable() and ("\x00" in value or "\n" in value or "\r" in value):
        value = value.replace("\x00", "").replace("\r", " ").replace("\n", " ")
    return value


def recipients_field() -> models.TextField:
    """The ``recipients`` column of the queue and the log (NULL: written before migration 0016, not filled yet)."""
    return models.TextField(
        _("recipients"), null=True, blank=True, editable=False, help_text=_("To, Cc and Bcc, lower-cased.")
    )


def first_recipient_field() -> models.CharField:
    """The log's ``recipient`` column: the first address of ``recipients``, indexed (NULL: none, or not filled)."""
    return models.CharField(_("first recipient"), max_length=ADDRESS_LENGTH, null=True, blank=True, editable=False)


def subject_field() -> models.TextField:
    """The ``subject_text`` column of the queue and the log (NULL as ``recipients``)."""
    return models.TextField(_("subject"), null=True, blank=True, editable=False)


def search_q(term: str, extra: tuple[str, ...] = ()) -> models.Q:
    """The admin's search of the queue and the log in one place: what a term finds.

    * One address (``Bob@Example.com``, or ``Bob <bob@example.com>``): the messages with it in To, Cc or Bcc,
      in any case; not a part of another address. (The log answers this from the index of
      :class:`~mailer.recipients.LogRecipient`: see ``MessageLogQuerySet.search``.)
    * Anything else, word by word, each word somewhere (as the admin does): in the subject (any case), in
      the recipients (``example.com`` finds every address there), or by the lookups ``extra`` (the log's
      Message-ID, in part; the id the provider gave, whole).
    """
    address = address_term(term)
    if address is not None:
        return (
            models.Q(recipients=address)
            | models.Q(recipients__startswith=f"{address} ")
            | models.Q(recipients__endswith=f" {address}")
            | models.Q(recipients__contains=f" {address} ")
        )
    found = models.Q()
    for word in smart_split(term):
        word = unescape_string_literal(word) if word[:1] in "\"'" and word[-1:] == word[:1] else word
        if not word:
            continue
        either = models.Q(subject_text__icontains=word) | models.Q(recipients__contains=word.lower())
        for lookup in extra:
            either |= models.Q(**{lookup: word})
        found &= either
    return found
