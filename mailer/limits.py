"""How far one sending pass may go: ``MAILER_EMAIL_MAX_BATCH`` messages sent, ``MAILER_EMAIL_MAX_DEFERRED`` deferred.

The settings are read once per pass: they are asked about after every message.
"""

from __future__ import annotations

import logging
from typing import Protocol

from mailer.conf import mailer_settings

logger = logging.getLogger("mailer.engine")  # what these messages have always been logged on


class Counts(Protocol):
    sent: int
    deferred: int


class PassLimits:
    """The limits of one pass, told the pass's counts so far (a :class:`~mailer.engine.SendResult`)."""

    def __init__(self) -> None:
        self.max_batch: int | None = mailer_settings.EMAIL_MAX_BATCH
        self.max_deferred: int | None = mailer_settings.EMAIL_MAX_DEFERRED
        self.logged = False

    def room_for(self, counts: Counts, in_flight: int) -> bool:
        """May another delivery start without overshooting ``MAILER_EMAIL_MAX_BATCH``?"""
        return self.max_batch is None or counts.sent + in_flight < self.max_batch

    def reached(self, counts: Counts) -> bool:
        """Must the pass stop? Says why once, the first time."""
        if self.max_batch is not None and counts.sent >= self.max_batch:
            self.log_once(logging.INFO, "EMAIL_MAX_BATCH (%s) reached, stopping for this round", self.max_batch)
            return True
        if self.max_deferred is not None and counts.deferred >= self.max_deferred:
            text = "EMAIL_MAX_DEFERRED (%s) reached, stopping for this round"
            self.log_once(logging.WARNING, text, self.max_deferred)
            return True
        return False

    def log_once(self, level: int, text: str, value: int) -> None:
        if not self.logged:
            logger.log(level, text, value)
            self.logged = True
