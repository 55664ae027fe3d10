"""What the admin's search reads: a message's recipients and subject, stored as plain columns when it is written.

Queue rows (:class:`~mailer.models.Message`) and log rows (:class:`~mailer.models.MessageLog`) carry
``recipients`` (every address of To, Cc and Bcc, as :func:`~mailer.addresses.address_key` gives it: the
address alone, lower-cased, separated by one space) and ``subject_text`` (the subject as it was sent).
A log row's addresses are also written one row each to :class:`~mailer.recipients.LogRecipient`, whose
index answers a search by an exact address without reading the log.

Rows written before migration 0016, or by a django-mailer 2.x process during the upgrade, have NULL in
both columns: :func:`mailer.searchfill.fill` (the ``mailer_fill_search`` command) decodes them once, in batches.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext_lazy as _

from mailer.addresses import address_key

ADDRESS_LENGTH = 254  # LogRecipient.address's max_length: an index every database takes (utf8mb4 included)
RECIPIENTS_LENGTH = 16000  # characters kept of the recipients column: at four bytes each, they fit MySQL's TEXT
SUBJECT_LENGTH = 998  # a header line's limit (RFC 5322)


def search_columns(email: Any) -> dict[str, str | None]:
    """``{"recipients": ..., "subject_text": ...}`` for ``email`` (an ``EmailMessage``, or None: both None)."""
    if email is None:
        return {"recipients": None, "subject_text": None}
    found = []
    for attribute in ("to", "cc", "bcc"):
        for address in getattr(email, attribute, None) or ():
            found.append(address_key(str(address)))
    recipients = " ".join(dict.fromkeys(key for key in found if key))  # in order, each once
    subject = _text(getattr(email, "subject", ""))
    return {"recipients": _text(recipients)[:RECIPIENTS_LENGTH], "subject_text": subject[:SUBJECT_LENGTH]}


def addresses(recipients: str | None) -> list[str]:
    """The addresses of a ``recipients`` column, cut to what :class:`~mailer.recipients.LogRecipient` holds."""
    if not recipients:
        return []
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
    text = str(value) if value is not None else ""
    if type(text) is not str:  # SafeString and other subclasses: the drivers want the plain type
        text = str.__str__(text)
    return text.replace("\x00", "").replace("\r", " ").replace("\n", " ")


def recipients_field() -> models.TextField:
    """The ``recipients`` column of the queue and the log (NULL: written before migration 0016, not filled yet)."""
    return models.TextField(
        _("recipients"), null=True, blank=True, editable=False, help_text=_("To, Cc and Bcc, lower-cased.")
    )


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
