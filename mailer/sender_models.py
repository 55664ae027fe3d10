"""The row each sending process keeps up to date while it runs (migration 0018): :class:`SenderHeartbeat`.

A new table, so that a process of an older version keeps working during the upgrade: it never writes here.
What the rows mean (live, gone, stopped) is decided in :mod:`mailer.senders`; who writes them is
:mod:`mailer.heartbeats`.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SenderKind(models.TextChoices):
    """What runs the sender: one of the commands, or the task of :mod:`mailer.tasks`."""

    SEND_MAIL = "send_mail", "send_mail"
    RUNMAILER = "runmailer", "runmailer"
    RUNMAILER_PG = "runmailer_pg", "runmailer_pg"
    TASK = "task", _("task")


class SenderHeartbeat(models.Model):
    """One sending process (``host`` and ``pid``) and what it reported last.

    ``interval`` is the number of seconds between the process's heartbeats (its ``MAILER_HEARTBEAT_INTERVAL``),
    kept with the row so that whoever reads it judges it by the sender's own pace. ``rate`` is messages sent per
    second between its last two heartbeats. ``stopped_at`` is set when it ended cleanly.
    """

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    host = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("process id"))
    kind = models.CharField(_("kind"), max_length=20, choices=SenderKind.choices)
    alias = models.CharField(_("alias"), max_length=100, blank=True, default="")
    started = models.DateTimeField(_("started"))
    last_seen = models.DateTimeField(_("last seen"))
    stopped_at = models.DateTimeField(_("stopped at"), null=True, blank=True)
    sent = models.PositiveBigIntegerField(_("sent"), default=0)
    rate = models.FloatField(_("messages per second"), default=0.0)
    interval = models.FloatField(_("heartbeat interval"), default=10.0)

    class Meta:
        verbose_name = _("sender")
        verbose_name_plural = _("senders")
        constraints = [
            models.UniqueConstraint(fields=["host", "pid", "kind", "alias"], name="mailer_senderheartbeat_process")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.host}:{self.pid}" + (f" ({self.alias})" if self.alias else "")


class DrainChain(models.Model):
    """One chain of ``drain_queue`` tasks (:mod:`mailer.drain`, migration 0019): slot ``slot`` of ``alias``.

    ``token`` names the run the chain is waiting for (a run with another token was superseded and does not
    go on); ``due_at`` is when that run is due (while it runs: when its slice ends), ``None`` once the chain
    ended with nothing left to send; ``paced``: the run waits for the alias's relay (rate limit or pause), which
    mail queued meanwhile waits for too. A chain overdue by more than :data:`mailer.drain.LOST_AFTER` is lost
    (its worker died) and may be started again. ``task_id`` is the task framework's id of the run, to look for.
    """

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    alias = models.CharField(_("alias"), max_length=100)
    slot = models.PositiveIntegerField(_("slot"))
    token = models.CharField(_("token"), max_length=32, blank=True, default="")
    task_id = models.CharField(_("task id"), max_length=255, blank=True, default="")
    due_at = models.DateTimeField(_("next run due"), null=True, blank=True)
    paced = models.BooleanField(_("waits for its relay"), default=False)
    started_at = models.DateTimeField(_("last run started"), null=True, blank=True)

    class Meta:
        verbose_name = _("drain chain")
        verbose_name_plural = _("drain chains")
        constraints = [models.UniqueConstraint(fields=["alias", "slot"], name="mailer_drainchain_slot")]

    def __str__(self) -> str:
        return f"{self.alias} #{self.slot}"
