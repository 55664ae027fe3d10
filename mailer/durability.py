"""Which of the package's own transactions commit without waiting for the disk (PostgreSQL).

:data:`COMMIT_WITHOUT_WAITING_FOR_DISK` is an expression that, selected by a transaction's first query, makes
its commit return before the WAL record is flushed (``SET LOCAL synchronous_commit TO OFF``, with no round
trip of its own). Should the database server crash before the flush (the WAL writer flushes within
``3 * wal_writer_delay``, 0.6 s by default), such a transaction is undone. Waiting for the flush would make
every sender wait for the disk at each commit, and several senders queue behind each other's flushes.

It is used where undoing the transaction after a server crash is safe:

- the sending transaction (:mod:`mailer.claims`): it records the outcome of messages already handed to the
  backend; undone, the rows come back as they were, and the messages are sent again, as after a sender
  crash: nothing is lost;
- a rate-limit reservation or give-back (:mod:`mailer.ratewindows`): undone, the tokens of the last fraction
  of a second are not counted, so the senders may go over a limit by that much right after the database
  server restarts (never after a sender crash).
"""

from django.db.models.expressions import RawSQL

COMMIT_WITHOUT_WAITING_FOR_DISK = RawSQL("set_config('synchronous_commit', 'off', true)", ())
