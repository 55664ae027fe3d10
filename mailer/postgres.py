"""``runmailer_pg``: send as soon as mail is committed, using PostgreSQL's LISTEN/NOTIFY.

A statement-level trigger on the queue table notifies a channel whenever
messages are inserted; PostgreSQL delivers the notification when the
inserting transaction commits. The main thread listens on its own
connection and wakes one sending thread, which runs
:func:`mailer.engine.send_all`. Without notifications the thread still runs
a pass every ``MAILER_EMPTY_QUEUE_SLEEP`` seconds, so mail queued while no
listener ran, or retried, is sent too.

Failures:

* The database goes away (restart, failover, network): the listener
  reconnects every :data:`RECONNECT_DELAY` seconds and, once listening
  again, wakes the sending thread to catch up. The sending thread keeps one
  database connection for as long as it works (``CONN_MAX_AGE`` does not
  apply: there are no requests), checks it before each pass and replaces it
  when it is gone; a pass that fails on a lost connection is retried after
  :data:`RECONNECT_DELAY` seconds, doubling up to :data:`MAX_RETRY_DELAY`.
* A message the backend chokes on (the error handler re-raised): the engine
  has set it aside (deferred, traceback in the log); the error is logged
  and the next pass starts at once, so the rest of the queue goes out
  (after :data:`IMMEDIATE_RETRIES` such errors in a row, one second apart).
* The sending thread dies (``ImproperlyConfigured``, or a
  ``BaseException`` such as ``SystemExit``): the process stops, logs why and
  exits with status 1. It never goes on listening with nobody sending.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import select
import threading
import time
from collections.abc import Callable
from contextlib import closing

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, connections, router, transaction
from django.utils import timezone

from mailer import smtp, tables
from mailer.conf import mailer_settings
from mailer.engine import send_all
from mailer.models import Message
from mailer.summaries import MessageReport, SendResult
from mailer.wakeups import until_due

logger = logging.getLogger(__name__)

# The names django-mailer 2.x used, so its trigger is replaced rather than doubled.
CHANNEL = "django_mailer_new_message"
FUNCTION = "django_mailer_notify_new_message"
TRIGGER = "django_mailer_message_notify_trigger"

RECONNECT_DELAY = 1.0  # between attempts to listen again
MAX_RETRY_DELAY = 30.0  # between passes that fail on the database connection, at most
CONNECT_TIMEOUT = 10  # seconds, for the listening connection unless OPTIONS set connect_timeout
# Unexpected errors (not the connection) in a row that are retried at once: each normally set a poison
# message aside. After that, a pause of RECONNECT_DELAY between passes, so a persistent error does not spin.
IMMEDIATE_RETRIES = 3

# pg_trigger.tgtype of an AFTER INSERT ... FOR EACH STATEMENT trigger (TRIGGER_TYPE_INSERT; no ROW bit).
_STATEMENT_AFTER_INSERT = 4


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def install_trigger(using: str) -> None:
    """Create (or replace) the function and the trigger that notify :data:`CHANNEL`.

    Runs in one transaction, serialized by an advisory lock, so that several
    runmailer_pg processes can start at once. A trigger that is already right
    is left alone: dropping it would lock the queue table against writers
    while another sender holds rows.
    """
    connection = connections[using]
    table = connection.ops.quote_name(Message._meta.db_table)
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [TRIGGER])
        cursor.execute(
            f"""
            CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger AS $$
            BEGIN
              PERFORM pg_notify('{CHANNEL}', '');
              RETURN NULL;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        cursor.execute(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s "
            "AND tgfoid = %s::regprocedure AND tgtype = %s",
            [table, TRIGGER, f"{FUNCTION}()", _STATEMENT_AFTER_INSERT],
        )
        if cursor.fetchone() is None:
            cursor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
            cursor.execute(
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
            )


def wake_senders(using: str | None = None) -> None:
    """Have every ``runmailer_pg`` listening on the queue's database run a pass now, as new mail does.

    For mail made due otherwise than by an insert, such as the admin's "send now" (``make_due()``), which
    the insert trigger does not see. PostgreSQL delivers the notification when the current transaction
    commits. Does nothing on other databases.
    """
    connection = connections[using or router.db_for_write(Message)]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


class Listener:
    """Waits for notifications on a dedicated connection, with psycopg 3 or psycopg2.

    The connection is made with the driver directly, from Django's connection
    parameters: never from a connection pool (``OPTIONS["pool"]``), which
    would lose a connection to LISTEN forever.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.connection = None
        self.connected_at = 0.0
        self._style = ""  # "notifies" (psycopg >= 3.2), "handler" (psycopg 3.1) or "psycopg2"
        self._pending = False  # a notification seen by the handler (psycopg 3.1)

    def connect(self) -> None:
        db = connections[self.using]
        params = db.get_connection_params()
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        conn = db.Database.connect(**params)
        try:
            conn.autocommit = True
            notifies = getattr(conn, "notifies", None)
            if not callable(notifies):
                self._style = "psycopg2"
            elif "timeout" in inspect.signature(notifies).parameters:
                self._style = "notifies"
            else:
                self._style = "handler"
                conn.add_notify_handler(self._notified)
            with closing(conn.cursor()) as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        self.connection = conn
        self.connected_at = time.monotonic()

    def _notified(self, notify) -> None:
        self._pending = True

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a notification arrived. Raises when the connection is lost."""
        conn = self.connection
        if self._style == "notifies":
            return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
        if self._style == "psycopg2":
            if not conn.notifies:
                if not select.select([conn], [], [], timeout)[0]:
                    return False
                conn.poll()
            received = bool(conn.notifies)
            del conn.notifies[:]
            return received
        # psycopg 3.1: notifications reach the handler while a command runs.
        if not self._pending and select.select([conn.fileno()], [], [], timeout)[0]:
            conn.execute("SELECT 1")
        received, self._pending = self._pending, False
        return received

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                pass
            self.connection = None


class PostgresSender:
    """The listening loop and its one sending thread."""

    def __init__(
        self,
        on_pass: Callable[[SendResult], None] | None = None,
        on_message: Callable[[MessageReport], None] | None = None,
        on_commit: Callable[[SendResult], None] | None = None,
    ) -> None:
        self.on_pass = on_pass  # called with the result of each pass, in the sending thread
        self.on_message = on_message  # called with what became of each message, in the sending thread
        self.on_commit = on_commit  # called with the pass's counts after each commit, in the sending thread
        self.using = router.db_for_write(Message)
        if connections[self.using].vendor != "postgresql":
            raise ImproperlyConfigured(
                f"runmailer_pg needs PostgreSQL; the database {self.using!r} for mailer.Message is "
                f"{connections[self.using].display_name}. Use runmailer instead."
            )
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.paced_for: float | None = None  # of the last pass (SendResult.paced_for)
        self.thread = threading.Thread(target=self.work, name="mailer-sender", daemon=True)

    # The sending thread.

    def work(self) -> None:
        failures = 0  # passes in a row that raised
        retry_in: float | None = None  # None: wait for a notification or the heartbeat
        try:
            while True:
                self.wake.wait(retry_in)
                self.wake.clear()
                if self.stopping.is_set():
                    return
                started = timezone.now()
                retry_in = self.send_pass(failures)
                failures = 0 if retry_in is None else failures + 1
                if retry_in is None:
                    retry_in = self.until_due(started)
                    if self.paced_for is not None:  # mail left for a relay at its rate limit
                        retry_in = self.paced_for if retry_in is None else min(retry_in, self.paced_for)
        except BaseException as exc:
            self.failure = exc
            self.stopping.set()
        finally:
            connections.close_all()

    def send_pass(self, failures: int) -> float | None:
        """One :func:`send_all` pass; None when it went through, else the seconds before the next try.

        ``ImproperlyConfigured``, ``ImportError`` and ``BaseException`` propagate: they end the thread.
        """
        self.check_connection()
        try:
            # Most passes are the heartbeat's and find nothing: their "Sent:" line is for DEBUG only.
            result = send_all(
                stop=self.stopping,
                wait_for_limits=True,
                on_message=self.on_message,
                on_commit=self.on_commit,
                log_idle=False,
            )
        except (ImproperlyConfigured, ImportError):
            raise
        except Exception as exc:
            if self.lost_connection(exc):
                delay = min(RECONNECT_DELAY * 2**failures, MAX_RETRY_DELAY)
                logger.warning(
                    "lost the database connection while sending (%s); retrying in %ss", _one_line(exc), delay
                )
                self.close_connection()
                return delay
            tables.raise_if_missing(exc)  # `migrate` was not run: nothing to carry on with
            # Normally a message the backend choked on: the engine has deferred it and logged the traceback.
            logger.exception("sending failed; carrying on")
            return 0.0 if failures < IMMEDIATE_RETRIES else RECONNECT_DELAY
        self.paced_for = None if result is None else result.paced_for
        if result is not None and self.on_pass is not None:
            self.on_pass(result)
        return None

    def until_due(self, since: datetime.datetime) -> float | None:
        """Seconds until a message waiting for a retry falls due: the sending thread wakes up for it then
        (at once for one that fell due during the pass started at ``since``)."""
        try:
            return until_due(since)
        except DatabaseError as exc:
            logger.info("could not look for messages waiting for a retry (%s); the next pass will", _one_line(exc))
            return None

    def check_connection(self) -> None:
        """Drop this thread's database connection if it no longer works (the server restarted...).

        Django replaces a connection only at the start of a request
        (``close_old_connections()``); this thread never serves one, so it
        checks before each pass. Django reconnects on the next query.
        """
        db = connections[self.using]
        if db.connection is not None and not db.in_atomic_block and not db.is_usable():
            logger.info("the database connection for sending is gone; reconnecting")
            self.close_connection()

    def close_connection(self) -> None:
        try:
            connections[self.using].close()
        except Exception:
            logger.debug("closing a broken database connection raised", exc_info=True)

    def lost_connection(self, exc: BaseException) -> bool:
        driver = connections[self.using].Database
        connection_errors = (OperationalError, InterfaceError, driver.OperationalError, driver.InterfaceError)
        return isinstance(exc, connection_errors)

    # The main thread.

    def run(self) -> int:
        """Listen until :meth:`stop`; returns the exit status (non-zero when sending died)."""
        install_trigger(self.using)
        connections[self.using].close()  # From here on, this thread only listens, on a connection of its own.
        listener = Listener(self.using)
        self.thread.start()
        sleep = mailer_settings.EMPTY_QUEUE_SLEEP
        next_beat = time.monotonic() + sleep
        lost_since: float | None = None  # when the listening connection was lost; None while listening
        try:
            while not self.stopping.is_set():
                if not self.thread.is_alive():
                    self.failure = self.failure or RuntimeError("the sending thread ended")
                    break
                if listener.connection is None:
                    try:
                        listener.connect()
                    except Exception as exc:
                        log = logger.warning if lost_since is None else logger.debug
                        log("cannot listen for new mail (%s); retrying every %ss", _one_line(exc), RECONNECT_DELAY)
                        lost_since = lost_since or time.monotonic()
                        self.stopping.wait(RECONNECT_DELAY)
                        continue
                    if lost_since is None:
                        logger.info("listening for new mail on channel %s", CHANNEL)
                    else:
                        logger.info(
                            "listening for new mail again, after %.1fs without a connection",
                            time.monotonic() - lost_since,
                        )
                    lost_since = None
                    # LISTEN is in place: send what was queued before (or while disconnected).
                    self.wake.set()
                timeout = max(0.0, min(next_beat - time.monotonic(), 1.0))
                try:
                    if listener.wait(timeout):
                        self.wake.set()
                except Exception as exc:
                    logger.warning("lost the listening connection (%s); reconnecting", _one_line(exc))
                    lost_since = time.monotonic()
                    just_connected = lost_since - listener.connected_at < RECONNECT_DELAY
                    listener.close()
                    if just_connected:  # Do not spin on a connection that fails as soon as it is made.
                        self.stopping.wait(RECONNECT_DELAY)
                    continue
                if time.monotonic() >= next_beat:
                    self.wake.set()
                    next_beat = time.monotonic() + sleep
        finally:
            listener.close()
            self.stopping.set()
            self.wake.set()
            self.thread.join()
        if self.failure is not None:
            logger.error(
                "the sending thread died; stopping",
                exc_info=(type(self.failure), self.failure, self.failure.__traceback__),
            )
            return 1
        return 0

    def stop(self, *args) -> None:
        """End the pass in progress, then leave :meth:`run` (a signal handler).

        A delivery blocked on a relay is cut short (its message stays queued).
        """
        self.stopping.set()
        self.wake.set()
        smtp.interrupt_soon()
