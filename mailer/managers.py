"""How the queue, the don't-send list and the log are asked and changed: the managers of :mod:`mailer.models`.

Each works on its own model (``self.model``), so this module imports no model: :mod:`mailer.models` imports it.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, models, router, transaction
from django.db.models.expressions import RawSQL
from django.db.models.functions import Lower
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.timezone import now

from mailer import storage
from mailer.addresses import address_key, entry_key
from mailer.bounce_models import address_digest
from mailer.choices import Priority, Result
from mailer.conf import mailer_settings
from mailer.logrows import log_fields
from mailer.searchcols import address_term, addresses, search_q


class StoredFilesQuerySet(models.QuerySet):
    """Deleting rows also deletes the files in ``MAILER_STORAGE`` that no remaining row refers to.

    The rows that may refer to a file are read first (one query, filtered by
    the database), their files checked and deleted once the deletion commits.
    """

    def delete(self) -> tuple[int, dict[str, int]]:
        if not mailer_settings.STORAGE:
            return super().delete()
        held = storage.tokens_of_rows(storage.referring_rows(self).iterator())
        result = super().delete()
        storage.release(held, self.db)
        return result


class MessageQuerySet(StoredFilesQuerySet):
    def high_priority(self) -> MessageQuerySet:
        return self.filter(priority=Priority.HIGH)

    def medium_priority(self) -> MessageQuerySet:
        return self.filter(priority=Priority.MEDIUM)

    def low_priority(self) -> MessageQuerySet:
        return self.filter(priority=Priority.LOW)

    def non_deferred(self) -> MessageQuerySet:
        return self.exclude(priority=Priority.DEFERRED)

    def deferred(self) -> MessageQuerySet:
        return self.filter(priority=Priority.DEFERRED)

    def due(self) -> MessageQuerySet:
        """The messages a sender may take now: not deferred, and not waiting for a later attempt."""
        return self.non_deferred().filter(models.Q(not_before__isnull=True) | models.Q(not_before__lte=now()))

    def waiting(self) -> MessageQuerySet:
        """The messages not deferred but not due yet (``not_before`` still ahead): :meth:`waiting_for_retry` and
        :meth:`scheduled`."""
        return self.non_deferred().filter(not_before__gt=now())

    def waiting_for_retry(self) -> MessageQuerySet:
        """The :meth:`waiting` messages that failed before: waiting for their next attempt."""
        return self.waiting().filter(attempts__gt=0)

    def scheduled(self) -> MessageQuerySet:
        """The :meth:`waiting` messages not tried yet: queued with a ``send_at`` still ahead."""
        return self.waiting().filter(models.Q(attempts=0) | models.Q(attempts__isnull=True))

    def next_due(self, since: datetime.datetime | None = None) -> datetime.datetime | None:
        """When the first :meth:`waiting` message becomes due (``None``: none waits).

        With ``since`` (when a pass started), a message that fell due after it counts too, with its
        ``not_before`` in the past: that pass claimed before it was due, so the next one must send it.
        """
        after = now() if since is None else since
        waiting = self.non_deferred().filter(not_before__gt=after)
        return waiting.order_by("not_before").values_list("not_before", flat=True).first()

    def make_due(self) -> int:
        """Make the :meth:`waiting` messages (:meth:`scheduled`, or waiting for a retry) due now; return how many.

        What the admin's "send now" action runs: their ``not_before`` is cleared, so the next pass of any sender
        takes them, in the usual order (priority, then oldest first). Deferred messages stay deferred, and
        ``expires_at`` still holds. Messages already due are left alone (and not counted).
        """
        return self.waiting().update(not_before=None)

    def retryable(self) -> MessageQuerySet:
        """The deferred messages that retrying puts back on the queue.

        The retry limit's one home (``retry_deferred()``, the ``retry_deferred``
        command and the admin action all ask here): with
        ``MAILER_EMAIL_MAX_RETRIES`` set, a message already retried that many
        times stays deferred; without it, every deferred message is retryable.
        """
        return self.deferred().exclude(_retries_used_up())

    def retries_used_up(self) -> MessageQuerySet:
        """The deferred messages that stay deferred: the rest of :meth:`deferred` after :meth:`retryable`."""
        return self.deferred().filter(_retries_used_up())

    def retry_deferred(self, new_priority: int = Priority.MEDIUM.value) -> int:
        """Put the :meth:`retryable` messages back on the queue, counting the retry; return how many.

        Messages :meth:`waiting_for_retry` are made due now as well (and counted): as in django-mailer 2.x,
        ``retry_deferred`` sends every message that failed at the next run.
        """
        waiting = self.waiting_for_retry().update(not_before=None)
        return waiting + self.retryable().update(priority=new_priority, retry_count=models.F("retry_count") + 1)

    def search(self, term: str) -> MessageQuerySet:
        """The queued messages the admin's search finds for ``term`` (the rule: :func:`~mailer.searchcols.search_q`).

        A scan of the queue's plain columns, never of its message data: the queue holds the mail not sent yet.
        """
        return self.filter(search_q(term))

    def mark_deferred(self) -> int:
        """Defer these rows, in one ``UPDATE``; return how many.

        Deferring a message is giving it ``Priority.DEFERRED``: senders pass it
        over until ``retry_deferred`` puts it back. This is the form for rows
        known by their key (``Message.objects.filter(pk=pk).mark_deferred()``),
        which sends no signal; :meth:`Message.defer` is the same for a message
        in hand, through ``save()``.
        """
        return self.update(priority=Priority.DEFERRED.value)


def _retries_used_up() -> models.Q:
    """Messages retried ``MAILER_EMAIL_MAX_RETRIES`` times; none when the setting is ``None`` (no limit)."""
    max_retries = mailer_settings.EMAIL_MAX_RETRIES
    if max_retries is None:
        return models.Q(pk__in=[])
    return models.Q(retry_count__gte=max_retries)


class MessageManager(models.Manager.from_queryset(MessageQuerySet)):
    pass


# Keep each IN (...) well below every database's limit on query parameters.
_CHUNK = 500

# How long a process trusts having seen the list empty; changes made through the ORM in this process
# are seen at once (see _forget_emptiness). The list is checked again, exactly, when the message is sent.
EMPTY_FOR = 1.0
_seen_empty_at: float | None = None


class DontSendEntryManager(models.Manager):
    def has_address(self, address: str) -> bool:
        """Is ``address`` (bare or with a display name) on the don't-send list? Case does not matter."""
        key = entry_key(address)
        return bool(key) and key in self.keys_on_list([key])

    def keys_on_list(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` (from :func:`~mailer.addresses.address_key`) that are on the list.

        Entries are stored folded by Python (see :meth:`mailer.models.DontSendEntry.save`); ``LOWER()`` on the
        column also folds the ASCII letters of rows written as given (by django-mailer 2.x, or by an
        ``update()``) and uses the index of migration 0010. What the database returns is compared
        again here: a collation that ignores accents (MariaDB's default) would match "ann" with "änn".
        """
        keys = set(keys)
        found = self.annotate(key=Lower("to_address")).filter(key__in=keys).values_list("key", flat=True)
        return keys.intersection(found)

    def blocked_addresses(self, addresses: Iterable[str], *, queueing: bool = False) -> set[str]:
        """The subset of ``addresses`` (as :func:`~mailer.addresses.address_key`) that is on the list.

        One query per 500 distinct addresses. When ``queueing``, a list seen
        empty less than ``EMPTY_FOR`` seconds ago is not asked again: queueing
        then costs no query on sites without a don't-send list. Sending always asks.
        """
        blocked: set[str] = set()
        if queueing and self._seen_empty():
            return blocked
        keys = sorted({address_key(a) for a in addresses} - {""})
        for start in range(0, len(keys), _CHUNK):
            blocked.update(self.keys_on_list(keys[start : start + _CHUNK]))
        return blocked

    def add_once(self, address: str, **fields: Any) -> bool:
        """Put ``address`` on the list unless it is there already (in any case); return whether it was added.

        ``fields`` are the other fields of the new entry (``reason``, ``esp_name``...). An entry already on the
        list is left as it is. Safe when called at once for the same address by several processes (two webhooks
        reporting one bounce): one entry is added and the others return False, through the unique index on
        ``address_digest``. Inside a transaction, the insert is a savepoint that a conflict rolls back alone.
        """
        key = entry_key(address)
        if "@" not in key:
            raise ValueError(f"Not an email address: {address!r}")
        if self.keys_on_list([key]):
            return False
        using = self._db or router.db_for_write(self.model)
        entry = self.model(to_address=key, address_digest=address_digest(key), **fields)
        try:
            with transaction.atomic(using=using):
                entry.save(force_insert=True, using=using)
        except IntegrityError:
            if not self.using(using).filter(address_digest=entry.address_digest).exists():
                raise  # another constraint, not the entry added at the same time
            return False
        return True

    def _seen_empty(self) -> bool:
        """Is the list empty? Asks the database at most once per ``EMPTY_FOR`` seconds while it is."""
        global _seen_empty_at
        moment = time.monotonic()
        if _seen_empty_at is not None and moment - _seen_empty_at < EMPTY_FOR:
            return True
        empty = not self.exists()
        _seen_empty_at = moment if empty else None
        return empty

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list[models.Model]:
        objs = list(objs)
        for obj in objs:
            obj.to_address = entry_key(obj.to_address)
        created = super().bulk_create(objs, *args, **kwargs)
        _forget_emptiness()  # bulk_create sends no post_save
        return created


@receiver([post_save, post_delete], sender="mailer.DontSendEntry")
def _forget_emptiness(**kwargs: Any) -> None:
    """The list changed: the next queueing asks the database again."""
    global _seen_empty_at
    _seen_empty_at = None


class MessageLogQuerySet(StoredFilesQuerySet):
    def search(self, term: str) -> MessageLogQuerySet:
        """The entries the admin's search finds for ``term``; the rule is :func:`~mailer.searchcols.search_q`'s.

        An address reads two indexes: of the entries' first address, and of their others
        (:class:`~mailer.recipients.LogRecipient`). When no entry has that
        address, the term is looked for in the Message-IDs (one written without its angle brackets looks
        like an address). Other terms scan the log's plain columns, never its message data.
        """
        address = address_term(term)
        if address is None:
            return self.filter(search_q(term, extra=("message_id__icontains", "provider_message_id")))
        first = self.model._default_manager.filter(recipient=address).values("pk")
        others = _recipient_rows(self.model).filter(address=address).values("log")
        # As a derived table: MariaDB runs "IN (... UNION ...)" once per row of the log, "IN (SELECT * FROM
        # (... UNION ...))" once; PostgreSQL and SQLite read both alike.
        sql, params = first.union(others, all=True).query.get_compiler(using=self.db).as_sql()
        sent_to = self.filter(pk__in=RawSQL(f"SELECT * FROM ({sql}) found", params))
        if sent_to.exists():
            return sent_to
        return self.filter(message_id__in=[term.strip(), f"<{term.strip()}>"])  # whole: a scan, but a short one


def _recipient_rows(model: type[models.Model]) -> models.QuerySet:
    return model._meta.get_field("recipient_rows").related_model._default_manager.all()


class MessageLogManager(models.Manager.from_queryset(MessageLogQuerySet)):
    def log(self, message: Any, result_code: str, log_message: str = "") -> models.Model:
        """Record the outcome of an attempt to send ``message`` (a :class:`~mailer.models.Message`)."""
        fields = log_fields(message, message.email, result_code, log_message)
        with transaction.atomic(using=self.db):
            row = self.create(**fields)
            link = _recipient_rows(self.model).model
            others = addresses(fields["recipients"])[1:]  # the first is the row's own column
            link._default_manager.using(self.db).bulk_create([link(log=row, address=address) for address in others])
        return row

    def purge_old_entries(self, days: int, result_codes: Iterable[str] | None = None) -> int:
        """Delete entries older than ``days`` days with these results (default: success)."""
        if result_codes is None:
            result_codes = [Result.SUCCESS.value]
        limit = _clock(self.model)() - datetime.timedelta(days=days)
        deleted, _per_model = self.filter(when_attempted__lt=limit, result__in=list(result_codes)).delete()
        return deleted

    def purge(self, days: int, result: str | None = None) -> dict[Result, int]:
        """What ``manage.py purge_mail_log`` and the ``purge_log`` task do: delete entries older than ``days`` days
        whose result is ``result`` (a key of :data:`PURGE_RESULTS`; ``None``: success), one ``DELETE`` per result
        so that the caller can say how many of each went; how many per result."""
        try:
            codes = PURGE_RESULTS[result or Result.SUCCESS.word]
        except KeyError:
            raise ValueError(f"result is {result!r}; it must be one of {', '.join(PURGE_RESULTS)}") from None
        return {code: self.purge_old_entries(days, [code]) for code in codes}


# What purge() accepts as ``result``, and the results each deletes.
PURGE_RESULTS: dict[str, list[Result]] = {
    Result.SUCCESS.word: [Result.SUCCESS],
    Result.FAILURE.word: [Result.FAILURE],
    "all": list(Result),
}


def _clock(model: type[models.Model]) -> Any:
    """``mailer.models.datetime_now``, looked up when called, as django-mailer 2.x read it: test suites
    patch that name to move time (read from the models' module without importing it: it imports this one)."""
    return getattr(sys.modules[model.__module__], "datetime_now", now)
