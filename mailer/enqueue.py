"""Validate emails, apply the don't-send list and store them on the queue.

Shared by :class:`mailer.backend.DbBackend` and the functions in :mod:`mailer`. What a valid email is
lives in :mod:`mailer.validation`; django-mailer 2.x's ``make_message()`` and ``filter_recipient_list()``
live with the model, in :mod:`mailer.models`, and are importable from here too.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.db import router, transaction
from django.utils.timezone import now

from mailer import drain_hook, notify, row_size, scheduling, searchcols, serialization, storage, tables, writes
from mailer.choices import get_priority  # also importable from here, as before
from mailer.conf import mailer_settings
from mailer.dontsend import blocked_text, remove_blocked
from mailer.logrows import log_fields
from mailer.message_ids import with_message_id
from mailer.models import RESULT_DONT_SEND, Message, filter_recipient_list, make_message
from mailer.validation import validate

__all__ = ["queue", "validate", "get_priority", "make_message", "filter_recipient_list"]


def queue(
    emails: Sequence[EmailMessage],
    priority: Any = None,
    mailer: str | None = None,
    *,
    send_at: datetime.datetime | None = None,
    expires_at: datetime.datetime | None = None,
) -> int:
    """Store ``emails`` on the queue in one transaction; return how many were queued.

    Either the whole batch is stored or, if anything is wrong, none of it.
    Emails without any recipient are left out, neither queued nor logged.
    Emails left without any recipient by the don't-send list are not queued
    but logged with ``RESULT_DONT_SEND``. ``mailer`` is the ``MAILERS`` alias
    they were queued through, if any. Each email is stored with a Message-ID
    (see :func:`mailer.message_ids.with_message_id`), which every attempt to
    send it then uses. ``send_at`` and ``expires_at`` apply to every email
    that does not carry its own (:mod:`mailer.scheduling`).
    """
    priority = get_priority(priority)
    schedule = scheduling.checked_schedule(send_at, expires_at)
    # No recipient at all: nothing to send, nothing to log, as Django's backends skip such an email.
    # (One whose recipients the don't-send list removes is logged as "don't send", below.)
    emails = [email for email in emails if email.recipients()]
    if not emails:
        return 0
    schedules = {}
    for email in emails:
        validate(email)
        schedules[id(email)] = scheduling.schedule_of(email, schedule)
    stored: list[storage.StoredAttachment] = []
    try:
        with tables.needed():  # forgot `migrate`: said so, not "no such table: mailer_dontsendentry"
            empty = {id(email) for email in remove_blocked(emails, queueing=True)}
            return _store(emails, empty, schedules, priority, mailer, stored)
    except BaseException:
        storage.discard(stored)  # nothing refers to them: the rows were not written
        raise


def _store(
    emails: Sequence[EmailMessage],
    empty: set[int],
    schedules: dict,
    priority: int,
    mailer: str | None,
    stored: list,
) -> int:
    """Encode and insert the rows of :func:`queue`; what was saved to ``MAILER_STORAGE`` is added to ``stored``."""
    when_added = now()  # one reading for the batch (the model default would read the clock per message)
    events = notify.Events.if_listened()  # None without a receiver of mailer.signals: nothing built for them
    messages = []
    logs = []
    sizes = []  # (row data, stored attachments) per row, for the size checks
    for original in emails:
        if id(original) in empty:
            # log_fields() encodes the email for the log: once, as for a queued one.
            message = Message(priority=priority, mailer=mailer, when_added=when_added)
            email, references = scheduling.unscheduled(original), []
            if mailer_settings.EMAIL_LOG_MESSAGE_DATA:  # else the log row keeps no data to refer to a file
                email, references = storage.offload(email)
                stored.extend(references)
            text = blocked_text(email, "no recipient left to send to")
            logs.append(log_fields(message, email, RESULT_DONT_SEND, text))
            sizes.append((logs[-1]["message_data"], references))
            if events is not None:
                events.skipped(message, logs[-1])
        else:
            # Copies, if anything is to change: the caller's email is left as it is.
            email, references = storage.offload(with_message_id(scheduling.unscheduled(original)))
            stored.extend(references)
            data = serialization.dumps(email)
            sizes.append((data, references))
            not_before, expires = schedules[id(original)]
            messages.append(
                {
                    "message_data": data,
                    "when_added": when_added,
                    "priority": priority,
                    "mailer": mailer,
                    "not_before": not_before,
                    "expires_at": expires,
                    **searchcols.search_columns(email),
                }
            )
            if events is not None:
                events.queued(messages[-1], email)
    using = router.db_for_write(Message)
    row_size.check_message_size(sizes)
    row_size.check([data for data, _references in sizes if data], using)
    if len(messages) == 1 and not logs:
        writes.insert(Message, messages, using)  # one INSERT: no transaction to open and commit
    else:
        # Also when insert() makes one call of it: executemany() outside a transaction commits each row.
        with transaction.atomic(using=using):
            writes.insert(Message, messages, using, batch_size=mailer_settings.MESSAGES_BATCH_SIZE)
            writes.insert_logs(logs, using)
    if events is not None:
        events.send_on_commit(using)  # once the caller's transaction commits, if the rows were queued in one
    if messages:
        # MAILER_DRAIN_TASKS: the drain chains, on commit, in time for the first message (send_at aside: now).
        due = None if any(row["not_before"] is None for row in messages) else min(r["not_before"] for r in messages)
        drain_hook.queued({row["mailer"] for row in messages}, using, due)
    return len(messages)
