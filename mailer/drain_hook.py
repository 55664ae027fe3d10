"""What queueing does for continuous draining: once the transaction commits, start the missing drain chains.

Apart from :mod:`mailer.drain`, which reads the routes, so that queueing imports nothing that leads back to it;
:mod:`mailer.tasks` (and the tasks framework) is imported only when ``MAILER_DRAIN_TASKS`` is set, at the commit.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils.module_loading import import_string

from mailer.conf import mailer_settings
from mailer.models import Message

logger = logging.getLogger("mailer.tasks")

DEFAULT_ALIAS = "default"  # mailer.routing.DEFAULT_ALIAS: the chains of mail queued without an alias


def chains_wanted(tasks: int | None = None) -> int:
    """``tasks``, or ``MAILER_DRAIN_TASKS``, as a number of chains per alias (0 for anything not a positive int:
    check mailer.E020 says so)."""
    value = mailer_settings.DRAIN_TASKS if tasks is None else tasks
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def queued(mailers: Iterable[str | None] | None, using: str, due: datetime.datetime | None = None) -> None:
    """Mail was queued with these ``Message.mailer`` values (``None``: made due again, by the admin or
    ``retry_deferred``, of any alias): once the transaction on ``using`` commits, make sure the chains of
    their aliases run (:func:`mailer.tasks.start_draining`; an alias not in ``MAILERS`` counts as the default
    one there). ``due``: when the first of that mail is due, if later than now (``send_at``). Nothing at all
    with ``MAILER_DRAIN_TASKS`` 0."""
    if not chains_wanted():
        return
    aliases = None if mailers is None else sorted({DEFAULT_ALIAS if mailer is None else mailer for mailer in mailers})
    transaction.on_commit(partial(_start, aliases, due), using=using)


def _start(aliases: list[str] | None, due: datetime.datetime | None) -> None:
    """Start the missing chains; never raises: the mail is queued whatever happens here (log a warning)."""
    try:
        start_draining = import_string("mailer.tasks.start_draining")
        for alias in aliases if aliases is not None else [None]:
            start_draining(alias, due=due)
    except Exception as exc:
        logger.warning("could not start the drain tasks for %s (%s); the mail stays queued", aliases or "all", exc)


@receiver(post_save, sender=Message, dispatch_uid="mailer.drain")
def _saved(sender: type[Message], instance: Message, created: bool, using: str, **kwargs: Any) -> None:
    """``make_message(...).save()``, the one way of queueing that is not :func:`mailer.enqueue.queue`."""
    if created:
        queued([instance.mailer], using, instance.not_before)
