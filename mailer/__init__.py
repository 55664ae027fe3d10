"""django-mailer: queue outgoing email in the database, send it from another process."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__version__ = "3.0.0.dev0"

__all__ = [
    "__version__",
    "get_priority",
    "mail_admins",
    "mail_managers",
    "send_html_mail",
    "send_mail",
    "send_mass_mail",
]

# The functions import lazily: this package is imported before Django's apps
# are ready (INSTALLED_APPS, settings), and must not touch the models then.


def get_priority(priority: Any) -> int:
    """``None`` -> ``PRIORITY_MEDIUM``; a ``PRIORITY_*`` constant as is; else ``ValueError``.

    The old labels ``"high"``, ``"medium"`` and ``"low"`` still work, with a
    ``DeprecationWarning``.
    """
    from mailer.choices import get_priority

    return get_priority(priority)


def send_mail(
    subject: str,
    message: str,
    from_email: str | None,
    recipient_list: Sequence[str],
    priority: int | None = None,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    *,
    send_at: datetime.datetime | None = None,
    expires_at: datetime.datetime | None = None,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Queue one plain text email, like :func:`django.core.mail.send_mail`. Returns 1 (0, with nothing queued
    or logged, when ``recipient_list`` is empty, as Django's ``send_mail()`` returns).

    ``send_at``: not sent before this time; ``expires_at``: not sent after it (see docs/usage.rst).
    ``headers``: extra headers, as for :class:`~django.core.mail.EmailMessage` (such as
    :func:`mailer.unsubscribe.unsubscribe_headers`).
    """
    from django.core.mail import EmailMessage
    from django.utils.encoding import force_str

    from mailer import enqueue

    email = EmailMessage(
        force_str(subject),
        force_str(message),
        from_email,
        _recipients(recipient_list),
        headers=dict(headers) if headers else None,
    )
    addressed = bool(email.recipients())  # before the don't-send list drops any
    enqueue.queue([email], priority, send_at=send_at, expires_at=expires_at)
    return 1 if addressed else 0


def send_html_mail(
    subject: str,
    message: str,
    message_html: str,
    from_email: str | None,
    recipient_list: Sequence[str],
    priority: int | None = None,
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    send_at: datetime.datetime | None = None,
    expires_at: datetime.datetime | None = None,
) -> int:
    """Queue an email with a plain text body and a ``text/html`` alternative. Returns 1 (0 without recipients).

    ``send_at`` and ``expires_at`` as for :func:`send_mail`.
    """
    from django.core.mail import EmailMultiAlternatives
    from django.utils.encoding import force_str

    from mailer import enqueue

    email = EmailMultiAlternatives(
        force_str(subject), force_str(message), from_email, _recipients(recipient_list), headers=headers
    )
    email.attach_alternative(force_str(message_html), "text/html")
    addressed = bool(email.recipients())  # before the don't-send list drops any
    enqueue.queue([email], priority, send_at=send_at, expires_at=expires_at)
    return 1 if addressed else 0


def send_mass_mail(
    datatuple: Iterable[tuple[str, str, str | None, Sequence[str]]],
    fail_silently: bool = False,
    auth_user: str | None = None,
    auth_password: str | None = None,
    connection: Any = None,
    *,
    send_at: datetime.datetime | None = None,
    expires_at: datetime.datetime | None = None,
) -> int:
    """Queue one email per ``(subject, message, from_email, recipient_list)``, in one transaction.

    Returns the number queued. ``send_at`` and ``expires_at`` (as for :func:`send_mail`) apply to every one.
    """
    from django.core.mail import EmailMessage
    from django.utils.encoding import force_str

    from mailer import enqueue, scheduling

    emails = [
        EmailMessage(force_str(subject), force_str(message), sender, _recipients(recipients))
        for subject, message, sender, recipients in datatuple
    ]
    if not emails:
        scheduling.checked_schedule(send_at, expires_at)  # refused alike, whether there is mail or not
        return 0
    return enqueue.queue(emails, send_at=send_at, expires_at=expires_at)


def _recipients(recipient_list: Sequence[str]) -> list[str]:
    # list("ann@example.org") would queue one message to "a", "n", "n", "@"...
    if isinstance(recipient_list, str):
        raise TypeError(f"recipient_list must be a list or tuple of addresses, not a string: {recipient_list!r}")
    return list(recipient_list)


def _site_mail(setting: str, subject: str, message: str, priority: int | None) -> int:
    from django.conf import settings
    from django.utils.encoding import force_str

    # (name, address) pairs before Django 6.0; plain addresses from then on.
    recipients = [entry if isinstance(entry, str) else entry[1] for entry in getattr(settings, setting)]
    if not recipients:
        return 0
    return send_mail(
        f"{settings.EMAIL_SUBJECT_PREFIX}{force_str(subject)}",
        message,
        settings.SERVER_EMAIL,
        recipients,
        priority=priority,
    )


def mail_admins(
    subject: str, message: str, fail_silently: bool = False, connection: Any = None, priority: int | None = None
) -> int:
    """Queue an email to ``ADMINS``, subject prefixed with ``EMAIL_SUBJECT_PREFIX``, from ``SERVER_EMAIL``."""
    return _site_mail("ADMINS", subject, message, priority)


def mail_managers(
    subject: str, message: str, fail_silently: bool = False, connection: Any = None, priority: int | None = None
) -> int:
    """Queue an email to ``MANAGERS``, like :func:`mail_admins`."""
    return _site_mail("MANAGERS", subject, message, priority)
