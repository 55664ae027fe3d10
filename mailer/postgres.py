"""``runmailer_pg``: send as soon as mail is committed, using PostgreSQL's LISTEN/NOTIFY.

A statement-level trigger on the queue table notifies a channel whenever
messages are inserted; PostgreSQL delivers the notification when the
inserting transaction commits. The main thread listens on its own
connection and wakes one sending thread, which runs
:func:`mailer.engine.send_all`. Without notifications the thread still runs
a pass every ``MAILER_EMPTY_QUEUE_SLEEP`` seconds, so mail queued while no
listener ran, or retried, is sent too.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router

from mailer.conf import mailer_settings
from mailer.engine import send_all
from mailer.models import Message

logger = logging.getLogger(__name__)

# The names django-mailer 2.x used, so its trigger is replaced rather than doubled.
CHANNEL = "django_mailer_new_message"
FUNCTION = "django_mailer_notify_new_message"
TRIGGER = "django_mailer_message_notify_trigger"

RECONNECT_DELAY = 1.0


def install_trigger(using: str) -> None:
    """Create (or replace) the function and the trigger that notify :data:`CHANNEL`."""
    connection = connections[using]
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
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
        cursor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
        cursor.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )


class Listener:
    """Waits for notifications on a dedicated connection, with psycopg 3 or psycopg2."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.connection = None

    def connect(self) -> None:
        db = connections[self.using]
        params = db.get_connection_params()
        self.connection = db.get_new_connection(params)
        if hasattr(self.connection, "notifies") and callable(self.connection.notifies):
            self.connection.autocommit = True
        else:
            self.connection.set_session(autocommit=True)
        with self.connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a notification arrived."""
        conn = self.connection
        if callable(getattr(conn, "notifies", None)):  # psycopg 3
            return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
        import select

        if select.select([conn], [], [], timeout) == ([], [], []):
            return False
        conn.poll()
        received = bool(conn.notifies)
        conn.notifies.clear()
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

    def __init__(self) -> None:
        self.using = router.db_for_write(Message)
        if connections[self.using].vendor != "postgresql":
            raise ImproperlyConfigured(
                f"runmailer_pg needs PostgreSQL; the database {self.using!r} for mailer.Message is "
                f"{connections[self.using].display_name}. Use runmailer instead."
            )
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.work, name="mailer-sender", daemon=True)

    def work(self) -> None:
        try:
            while True:
                self.wake.wait()
                self.wake.clear()
                if self.stopping.is_set():
                    return
                try:
                    send_all(stop=self.stopping)
                except (ImproperlyConfigured, ImportError):
                    raise
                except Exception:
                    logger.exception("sending failed; carrying on")
        except BaseException as exc:
            self.failure = exc
            self.stopping.set()
        finally:
            connections.close_all()

    def run(self) -> int:
        """Listen until :meth:`stop`; returns the exit status (non-zero when sending died)."""
        install_trigger(self.using)
        listener = Listener(self.using)
        self.thread.start()
        self.wake.set()  # Whatever is queued already.
        sleep = mailer_settings.EMPTY_QUEUE_SLEEP
        next_beat = time.monotonic() + sleep
        try:
            while not self.stopping.is_set():
                if listener.connection is None:
                    try:
                        listener.connect()
                        logger.debug("listening on %s", CHANNEL)
                        self.wake.set()  # Catch up on what was queued while disconnected.
                    except (DatabaseError, OSError, Exception) as exc:
                        logger.warning("cannot listen for new mail (%s); retrying in %ss", exc, RECONNECT_DELAY)
                        listener.close()
                        self.stopping.wait(RECONNECT_DELAY)
                        continue
                timeout = max(0.0, min(next_beat - time.monotonic(), 1.0))
                try:
                    if listener.wait(timeout):
                        self.wake.set()
                except Exception as exc:
                    logger.warning("lost the listening connection (%s); reconnecting", exc)
                    listener.close()
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
            logger.error("the sending thread died: %r", self.failure)
            return 1
        return 0

    def stop(self, *args) -> None:
        """Finish the pass in progress, then leave :meth:`run` (a signal handler)."""
        self.stopping.set()
        self.wake.set()
