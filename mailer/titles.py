"""How the admin names a queued or logged message: its subject, who it is to and when, for a person to read.

The name :mod:`mailer.admin_titles` gives a :class:`~mailer.models.Message` or
:class:`~mailer.models.MessageLog` in the admin (page titles, breadcrumbs, "deleted" notes; ``str()`` keeps
django-mailer 2.x's form): ``“Password reset” to ann@example.com, Nov. 30, 2026, 4:34 p.m.``, in the
active language and the current time zone, to the minute. A row that cannot be decoded, or a log entry
that kept no message data, is still named (by its Message-ID, or as undecodable).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import formats, timezone
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext

from mailer.emailparts import recipients

SUBJECT_LENGTH = 80  # characters of the subject a title keeps
SHOWN_RECIPIENTS = 2  # addresses a title names; the rest are counted


def when_text(when: datetime.datetime | None) -> str:
    """``when`` in the current time zone and language's date format, to the minute."""
    if when is None:
        return "-"
    if timezone.is_aware(when):
        when = timezone.localtime(when)
    return formats.date_format(when, "DATETIME_FORMAT")


def recipients_text(email: Any) -> str:
    """The first recipients of ``email`` (to, cc, then bcc), and how many more there are."""
    found = recipients(email)
    shown = ", ".join(found[:SHOWN_RECIPIENTS])
    more = len(found) - SHOWN_RECIPIENTS
    if more <= 0:
        return shown
    return ngettext("%(addresses)s and %(count)d more", "%(addresses)s and %(count)d more", more) % {
        "addresses": shown,
        "count": more,
    }


def title(email: Any, when: datetime.datetime | None, *, has_data: bool = True, message_id: str | None = None) -> str:
    """The name of a message decoded as ``email`` (``None``: not decodable, or no data) at ``when``."""
    values = {"when": when_text(when)}
    if email is None:
        if has_data:
            return gettext("Message that cannot be decoded, %(when)s") % values
        if message_id:
            return gettext("%(message_id)s, %(when)s") % {**values, "message_id": message_id}
        return gettext("Message without data, %(when)s") % values
    subject = Truncator(str(getattr(email, "subject", "") or "")).chars(SUBJECT_LENGTH) or gettext("(no subject)")
    to = recipients_text(email)
    values.update(subject=subject, to=to)
    if to:
        return gettext("“%(subject)s” to %(to)s, %(when)s") % values
    return gettext("“%(subject)s”, %(when)s") % values
