"""Send the queue: claim a batch, hand each message to the real backend, log, commit.

Nothing here is specific to a database; :mod:`mailer.claims` holds that.

Delivery semantics, per transaction: a sender claims up to
``MAILER_COMMIT_BATCH_SIZE`` messages (locked against other senders), hands
them to the backend one by one, and commits the results (log rows written,
sent rows deleted) after that many messages or ``MAILER_COMMIT_INTERVAL``
seconds, whichever comes first. Claimed messages it did not reach are
released by the same commit. If the sender dies before a commit, the
messages it handed to the backend in that transaction are still queued and
will be sent again: at most the batch size, and in practice the messages
sent within one commit interval. With several connections, deliveries
still under way at a commit are leased instead of waited for
(:mod:`mailer.leases`); if the sender dies, those are sent again once the
lease has run out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connections, router
from django.db.models import QuerySet
from django.utils import timezone

from mailer import claims, legacy_names, tables
from mailer.conf import mailer_settings
from mailer.locking import acquire_lock, release_lock
from mailer.models import Message
from mailer.outcomes import DEFERRABLE_EXCEPTIONS, handle_delivery_exception
from mailer.passes import Pass
from mailer.reading import QueueNotDecodable
from mailer.routing import routes
from mailer.summaries import MessageReport, SendResult, log_sent
from mailer.wakeups import idle_wait, nap, until_due

__all__ = [
    "DEFERRABLE_EXCEPTIONS",
    "QueueNotDecodable",
    "SendResult",
    "acquire_lock",
    "handle_delivery_exception",
    "idle_wait",
    "prioritize",
    "release_lock",
    "send_all",
    "send_loop",
    "until_due",
]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """2.x's ``EMPTY_QUEUE_SLEEP``, ``LOCK_WAIT_TIMEOUT`` and ``LOCK_PATH``, read from the settings now."""
    return legacy_names.engine_attribute(name)


def prioritize(queryset: QuerySet | None = None) -> QuerySet:
    """The queue (or ``queryset``) in the order it is sent: high, medium, low; oldest first; never deferred."""
    return claims.in_send_order(queryset)


def send_all(
    queryset: QuerySet | None = None,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[SendResult], None] | None = None,
    on_commit: Callable[[SendResult], None] | None = None,
    wait_for_limits: bool = False,
    on_message: Callable[[MessageReport], None] | None = None,
    log_idle: bool = True,
) -> SendResult | None:
    """Send the queue once (or the messages of ``queryset``).

    Returns what was done, or ``None`` when another run holds the lock.
    Setting ``stop`` (from another thread or a signal handler) ends the pass
    after the message in hand, with everything sent so far committed.
    ``progress``, if given, is called with the counts so far (a copy of the
    :class:`SendResult`, ``seconds`` still 0) each time a message has been
    dealt with: sent, deferred, skipped or failed, its outcome recorded for
    the commit of its batch. It runs in the calling thread, never in a
    delivery thread; an exception from it is logged and it is not called again.
    ``on_commit``, if given, is called with a copy of the counts after each
    batch's transaction commits: unlike ``progress``, it never counts
    outcomes that a failure or an interruption rolled back.
    Re-raises an exception the error handler re-raised, after putting that
    message aside (deferred, with the traceback in the log).
    When every relay with mail is at its ``MAILER_RATE_LIMITS`` or paused, the
    pass ends (``paced_for`` of the result says for how long), or with
    ``wait_for_limits`` waits for the first to open, holding no message row.
    ``on_message``, if given, is called (in the calling thread) with a
    :class:`~mailer.summaries.MessageReport` for each message sent, deferred,
    skipped or failed. Without ``log_idle``, the ``Sent:`` line of a pass that
    found nothing to do is logged at the ``DEBUG`` level only.
    """
    routes_now = routes()  # Refuse a configuration that cannot send before touching anything.
    lock = None
    if mailer_settings.USE_FILE_LOCK:
        acquired, lock = acquire_lock()
        if not acquired:
            return None
    try:
        # As in 2.x: the engine's own prioritize(), looked up now (test suites patch it), under the lock.
        queryset = prioritize(queryset)
        result = Pass(queryset, routes_now, stop, progress, on_commit, wait_for_limits, on_message).run()
    finally:
        if lock is not None:
            release_lock(lock)
    log_sent(logger, result, log_idle=log_idle)
    return result


def send_loop(
    *,
    stop: threading.Event | None = None,
    on_pass: Callable[[SendResult], None] | None = None,
    carry_on: bool = False,
    on_message: Callable[[MessageReport], None] | None = None,
    on_commit: Callable[[SendResult], None] | None = None,
) -> None:
    """Send forever (or until ``stop`` is set): wait while nothing is queued, then :func:`send_all`.

    While nothing is due it sleeps ``EMPTY_QUEUE_SLEEP`` seconds (less when a
    message waiting falls due sooner) through ``time.sleep``, and calls this
    module's ``send_all`` once something is, both looked up when called, as
    django-mailer 2.x did: an exception from either ends the loop, as there.
    With ``carry_on`` (``runmailer`` passes it), an exception from one pass
    is logged and the loop goes on instead: the message that caused it has
    been deferred, so the next pass sends the rest; a database that cannot
    be reached (server restart, failover, network) is tried again after 1 s,
    doubling up to :data:`MAX_DATABASE_RETRY_DELAY`. ``ImproperlyConfigured``
    always ends the loop.
    ``on_pass``, if given, is called with the result of each pass that ran;
    ``on_message`` and ``on_commit`` are handed to each :func:`send_all`.
    """
    outages = 0  # database errors in a row
    while stop is None or not stop.is_set():
        sleep: Any = legacy_names.setting("EMPTY_QUEUE_SLEEP")
        try:
            close_old_connections()
            while not Message.objects.due().exists():
                outages = 0
                wait = idle_wait(sleep)
                logger.debug("sleeping for %s seconds before checking queue again", wait)
                if nap(wait, stop):
                    return
                close_old_connections()
            outages = 0
            started = timezone.now()
            # on_message and on_commit only when given: test suites replace send_all() with functions that lack them.
            extra = {"on_message": on_message} if on_message is not None else {}
            if on_commit is not None:
                extra["on_commit"] = on_commit
            result = send_all(stop=stop, wait_for_limits=True, **extra)
        except ImproperlyConfigured:
            raise
        except DatabaseError as exc:
            tables.raise_if_missing(exc)  # not an outage: `migrate` was not run; ends the loop
            if not carry_on:
                raise
            delay = min(2**outages, MAX_DATABASE_RETRY_DELAY)
            outages += 1
            log = logger.warning if outages == 1 else logger.info
            log("the database is unreachable (%s); trying again in %ss", " ".join(str(exc).split()), delay)
            _drop_database_connection()
            nap(delay, stop)
            continue
        except Exception:
            if not carry_on:
                raise
            logger.exception("sending failed; carrying on")
            nap(min(sleep, 1), stop)
            continue
        if result is not None and on_pass is not None:
            on_pass(result)
        if result is None or result.sent == 0:
            # A retry that fell due while the pass ran was not claimed by it: no nap then.
            wait = idle_wait(sleep, since=started)
            if result is not None and result.paced_for is not None:
                wait = min(wait, result.paced_for)  # mail left for a relay at its rate limit
            nap(wait, stop)


MAX_DATABASE_RETRY_DELAY = 30  # seconds between attempts to reach a database that is down, at most


def _drop_database_connection() -> None:
    """Close the queue's database connection, broken or not: the next query makes a new one."""
    try:
        connections[router.db_for_write(Message)].close()
    except Exception:
        logger.debug("closing a broken database connection raised", exc_info=True)
