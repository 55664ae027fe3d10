"""Refuse, when queueing, a message too large for one MySQL/MariaDB statement.

MySQL and MariaDB refuse any statement larger than the server's
``max_allowed_packet`` (16 MiB by default on MariaDB) by dropping the
connection: the caller sees "Server has gone away", which names neither the
message nor the limit. mysqlclient already sends a large batch one large row
per statement, so checking each row is enough. Other databases take rows far
larger than any mail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import connections

from mailer import storage
from mailer.conf import mailer_settings

# Rows below this size are never checked, so that ordinary mail costs no query: a server whose
# max_allowed_packet is this small could not take mysqlclient's own multi-row INSERTs of 64 KiB either.
CHECK_FROM = 64 * 1024
# Room for the rest of the INSERT, and for what the sender adds to the email before it logs it (a Message-ID,
# headers from the backend): the log entry holds the message again, and must fit too.
HEADROOM = 64 * 1024


class MessageTooLarge(ValueError):
    """A message is larger than the database server takes in one statement, or than ``MAILER_MAX_MESSAGE_SIZE``."""


def check_message_size(rows: Sequence[tuple[str | None, Sequence[storage.StoredAttachment]]]) -> None:
    """Raise :class:`MessageTooLarge` if a message is over ``MAILER_MAX_MESSAGE_SIZE`` bytes.

    ``rows``: (row data, attachments kept in storage) per message. The size
    counted is close to what the relay receives: the row's base64 text plus
    the stored attachments, base64-encoded as they are sent.
    """
    limit = mailer_settings.MAX_MESSAGE_SIZE
    if limit is None:
        return
    for data, references in rows:
        size = len(data or "") + storage.encoded_size(references)
        if size > limit:
            raise MessageTooLarge(
                f"This message is {size:,} bytes once encoded, more than MAILER_MAX_MESSAGE_SIZE ({limit:,} bytes):"
                " make its attachments smaller, or send a link to them instead."
            )


def max_allowed_packet(using: str) -> int:
    """The session's ``max_allowed_packet`` on database ``using``, queried once per connection."""
    wrapper = connections[using]
    wrapper.ensure_connection()
    cached = getattr(wrapper, "_mailer_max_allowed_packet", None)
    if cached is not None and cached[0] is wrapper.connection:
        return cached[1]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT @@max_allowed_packet")
        [limit] = cursor.fetchone()
    # Kept with the DB-API connection it was read on: a reconnection reads it again.
    wrapper._mailer_max_allowed_packet = (wrapper.connection, int(limit))
    return int(limit)


def check(data: Iterable[str], using: str) -> None:
    """Raise :class:`MessageTooLarge` if one of the serialised messages ``data`` can't be stored on ``using``."""
    if connections[using].vendor != "mysql":
        return
    largest = max((len(value) for value in data), default=0)  # ASCII (base64): characters are bytes
    if largest < CHECK_FROM:
        return
    limit = max_allowed_packet(using)
    if largest + HEADROOM > limit:
        if mailer_settings.STORAGE:
            advice = (
                f"Lower MAILER_STORAGE_THRESHOLD (now {mailer_settings.STORAGE_THRESHOLD:,} bytes) so that more of"
                f" its attachments are kept in storage {mailer_settings.STORAGE!r}, raise max_allowed_packet"
                " on the server, or store large attachments elsewhere and send a link."
            )
        else:
            advice = (
                "Set MAILER_STORAGE to an alias of STORAGES, so that attachments over MAILER_STORAGE_THRESHOLD"
                " are kept there rather than in the row; or raise max_allowed_packet on the server, or store"
                " large attachments elsewhere and send a link."
            )
        raise MessageTooLarge(
            f"This message is {largest:,} bytes once stored, more than the database can take: the server's"
            f" max_allowed_packet (a MySQL/MariaDB setting) is {limit:,} bytes, of which {HEADROOM:,} are kept for"
            f" the rest of the statement and for what sending adds. {advice}"
        )
