"""When a sender wakes up: for the next message waiting for a retry or for its ``send_at``; naps.

``runmailer`` (:func:`mailer.engine.send_loop`) and ``runmailer_pg`` (:mod:`mailer.postgres`) nap
between passes; these say for how long, so that mail due later goes within moments of its time.
"""

from __future__ import annotations

import datetime
import threading
import time

from django.utils import timezone

from mailer.models import Message


def idle_wait(longest: float, since: datetime.datetime | None = None) -> float:
    """Seconds to wait for more mail: ``longest``, or less when a message waiting (for a retry, or scheduled
    with ``send_at``) falls due sooner (0 when one fell due after ``since``, the start of the pass that just
    ended: see :func:`until_due`)."""
    due_in = until_due(since)
    return longest if due_in is None else min(longest, due_in)


def until_due(since: datetime.datetime | None = None) -> float | None:
    """Seconds until the first message waiting for a later attempt or for its ``send_at`` falls due (``None``:
    none waits).

    With ``since``, the start of a pass, a message that fell due while that pass ran counts (0 s): the
    pass claimed before its time, so only the next pass sends it. One due before the pass started and
    left queued by it (held back) does not, so that the sender does not spin on it.
    """
    due = Message.objects.next_due(since)
    if due is None:
        return None
    return max(0.0, (due - timezone.now()).total_seconds())


def nap(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep, cut short when ``stop`` is set; True if it is. Without ``stop``, through ``time.sleep``,
    looked up when called, as django-mailer 2.x slept: test suites patch it to break out of a loop."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)
