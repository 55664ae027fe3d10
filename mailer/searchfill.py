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

from django.db import models, router, transaction

from mailer import serialization
from mailer.models import MessageLog
from mailer.recipients import LogRecipient
from mailer.searchcols import addresses, log_columns, search_columns

logger = logging.getLogger(__name__)


def fill(model: type[models.Model], batch_size: int = 1000, using: str | None = None) -> int:
    """Fill the search columns of ``model``'s rows that have none (NULL ``recipients``); return how many.

    Each batch decodes ``batch_size`` rows and writes them in its own transaction, oldest first, so the
    work can be stopped and taken up again. A row without data (or with data that cannot be decoded)
    gets empty columns: it is not read again. For log rows, the addresses go to
    :class:`~mailer.recipients.LogRecipient` as well.
    """
    using = using or router.db_for_write(model)
    rows = model._default_manager.using(using)
    done = 0
    last = 0
    while True:
        batch = list(
            rows.filter(recipients__isnull=True, pk__gt=last)
            .order_by("pk")
            .values_list("pk", "message_data")[:batch_size]
        )
        if not batch:
            return done
        with transaction.atomic(using=using):
            links = []
            for pk, data in batch:
                columns = (log_columns if model is MessageLog else search_columns)(_decoded(data))
                columns["recipients"] = columns["recipients"] or ""
                columns["subject_text"] = columns["subject_text"] or ""
                # Only rows still unfilled: a row a sender wrote meanwhile keeps what it was given.
                if rows.filter(pk=pk, recipients__isnull=True).update(**columns) and model is MessageLog:
                    others = addresses(columns["recipients"])[1:]
                    links.extend(LogRecipient(log_id=pk, address=address) for address in others)
            LogRecipient.objects.using(using).bulk_create(links, batch_size=500)
        done += len(batch)
        last = batch[-1][0]
        logger.info("search columns filled for %d %s row(s)", done, model._meta.model_name)


def _decoded(data: str | None) -> Any:
    if not data:
        return None
    try:
        return serialization.loads(data)
    except Exception as exc:  # any undecodable row: noted, and left with empty columns
        logger.debug("cannot decode row data: %s", exc)
        return None
