"""Filling the search columns (:mod:`mailer.searchcols`) of rows written without them.

Rows queued or logged before migration 0016, or by a django-mailer 2.x process still running during the
upgrade, have NULL ``recipients`` and ``subject_text``: the admin's search does not find them until
:func:`fill` has decoded them, once. The ``mailer_fill_search`` command runs it; it can be stopped and run
again, and run while senders work.

This is done lazily rather than in migration 0016: decoding a log of millions of rows takes minutes, which
``migrate`` should not hold a deployment for, and rows that an old process writes after the migration
would be missed by it anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, models, router, transaction

from mailer import serialization
from mailer.models import MessageLog
from mailer.recipients import LogRecipient
from mailer.searchcols import addresses, log_columns, search_columns

logger = logging.getLogger(__name__)


def fill(model: type[models.Model], batch_size: int = 1000, using: str | None = None) -> int:
    """Fill the search columns of ``model``'s rows that have none (NULL ``recipients``); return how many.

    Each batch decodes ``batch_size`` rows and writes them (one ``UPDATE``) in its own transaction, oldest
    first, so the work can be stopped and taken up again. A row without data (or with data that cannot be decoded)
    gets empty columns: it is not read again. For log rows, the addresses go to
    :class:`~mailer.recipients.LogRecipient` as well.
    """
    using = using or router.db_for_write(model)
    rows = model._default_manager.using(using)
    names = ["recipients", "subject_text", "recipient"] if model is MessageLog else ["recipients", "subject_text"]
    columns_of = log_columns if model is MessageLog else search_columns
    done = 0
    last = 0
    while True:
        with transaction.atomic(using=using):
            # Locked, so that two runs at once never fill a row twice (the second skips what the first did).
            unfilled = rows.select_for_update().filter(recipients__isnull=True, pk__gt=last).order_by("pk")
            batch = list(unfilled.values_list("pk", "message_data")[:batch_size])
            if not batch:
                return done
            filled, links = [], []
            for pk, data in batch:
                columns = columns_of(_decoded(data))
                columns["recipients"] = columns["recipients"] or ""  # "": looked at, nothing to find
                columns["subject_text"] = columns["subject_text"] or ""
                filled.append((*(columns[name] for name in names), pk))
                if model is MessageLog:
                    others = addresses(columns["recipients"])[1:]
                    links.extend(LogRecipient(log_id=pk, address=address) for address in others)
            _update(model, names, filled, using)
            LogRecipient.objects.using(using).bulk_create(links, batch_size=500)
        done += len(batch)
        last = batch[-1][0]
        logger.info("search columns filled for %d %s row(s)", done, model._meta.model_name)


def _update(model: type[models.Model], names: list[str], values: list[tuple], using: str) -> None:
    """Set the columns ``names`` of each row ``(*values, pk)``, if still unfilled: one ``executemany()``
    (``bulk_update()`` builds a ``CASE`` of every row for every column, much slower)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(model._meta.get_field(name).column)} = %s" for name in names)
    table, pk, recipients = quote(model._meta.db_table), quote(model._meta.pk.column), quote("recipients")
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {pk} = %s AND {recipients} IS NULL", values)


def _decoded(data: str | None) -> Any:
    if not data:
        return None
    try:
        return serialization.loads(data)
    except Exception as exc:  # any undecodable row: noted, and left with empty columns
        logger.debug("cannot decode row data: %s", exc)
        return None
