"""``queue()``: put one message in the queue for a test, in one of the three shapes tests need.

``insert_rows()`` queues as a web process on a connection of its own does, for the tests whose sender is a
child process on a PostgreSQL database (``email_data()`` makes a row's ``message_data``).
"""

import datetime
import time
from collections.abc import Callable
from contextlib import closing

from django.core.mail import EmailMessage
from django.utils import timezone

from mailer import serialization
from mailer.models import PRIORITY_MEDIUM, DontSendEntry, Message, MessageLog, make_message


def queue(
    subject: str = "Hello",
    *,
    body: str | None = None,
    from_email: str = "from@example.com",
    to: list[str] | tuple[str, ...] = ("to@example.com",),
    priority: int | str = PRIORITY_MEDIUM,
    headers: dict | None = None,
    added: datetime.datetime | None = None,
    minutes_ago: float | None = None,
    email: EmailMessage | None = None,
    data: str | None = None,
    **fields,
) -> Message:
    """Queue one message and return the saved :class:`~mailer.models.Message`.

    By default it is built by ``make_message()`` from ``subject``, ``body`` (``"body of <subject>"``),
    ``from_email``, ``to``, ``headers`` and ``priority``, as the API queues mail. With ``email=``, that
    ``EmailMessage`` is stored as it is (no don't-send filtering). With ``data=``, the row's ``message_data``
    is that text and nothing is encoded: for code that must not decode, or undecodable rows.

    ``when_added`` is ``added``, else ``minutes_ago`` minutes before now, else the model's default (now).
    Other keyword arguments (``retry_count=...``) are set on the message before it is saved.
    """
    if data is not None:
        message = Message(message_data=data, priority=priority)
    elif email is not None:
        message = Message(priority=priority)
        message.email = email
    else:
        message = make_message(
            subject=subject,
            body=f"body of {subject}" if body is None else body,
            from_email=from_email,
            to=list(to),
            headers=headers,
            priority=priority,
        )
    if added is None and minutes_ago is not None:
        added = timezone.now() - datetime.timedelta(minutes=minutes_ago)
    if added is not None:
        message.when_added = added
    for name, value in fields.items():
        setattr(message, name, value)
    message.save()
    return message


def assert_nothing_stored() -> None:
    """Neither the queue nor the log holds a row: what refused input must leave behind."""
    assert Message.objects.count() == 0
    assert MessageLog.objects.count() == 0


def block(address: str) -> DontSendEntry:
    """Put ``address`` on the don't-send list."""
    return DontSendEntry.objects.create(to_address=address, when_added=timezone.now())


INSERT = "INSERT INTO mailer_message (message_data, when_added, priority, retry_count) VALUES (%s, now(), 2, 0)"


def email_data(subject: str, seq: int | None = None) -> str:
    """The ``message_data`` of a plain message (header ``X-Seq: seq`` when given), as the queue stores it."""
    headers = {"X-Seq": str(seq)} if seq is not None else None
    return serialization.dumps(EmailMessage(subject, "body", "from@example.com", ["to@example.com"], headers=headers))


def insert_rows(connect: Callable[[], object], *data: str) -> float:
    """Insert queued rows (medium priority) holding ``data``, in one transaction on ``connect()``, a new
    DB-API connection of the test's own to a PostgreSQL database; the ``time.monotonic()`` just before COMMIT.
    """
    with closing(connect()) as conn:
        conn.autocommit = False
        with closing(conn.cursor()) as cursor:
            cursor.executemany(INSERT, [[item] for item in data])
        committing = time.monotonic()
        conn.commit()
    return committing
