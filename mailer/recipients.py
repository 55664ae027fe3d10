"""The addresses of each log entry, one row each: what a search of the log by an exact address reads.

A log row keeps its recipients in one column (:mod:`mailer.searchcols`), which a database can only scan for
an address in the middle of it. :class:`LogRecipient` holds each address of each entry (To, Cc and Bcc,
lower-cased) with an index on ``(address, log)``: finding every entry sent to ``bob@example.com`` reads that
index, then those entries, on every database. Written with the log rows (:func:`mailer.writes.insert_logs`)
and deleted with them (``on_delete=CASCADE``).
"""

from django.db import models
from django.utils.translation import gettext_lazy as _

from mailer.searchcols import ADDRESS_LENGTH

ADDRESS_INDEX = "mailer_logrecipient_addr_idx"


class LogRecipient(models.Model):
    """One address of one log entry."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    log = models.ForeignKey("mailer.MessageLog", on_delete=models.CASCADE, related_name="recipient_rows")
    address = models.CharField(_("address"), max_length=ADDRESS_LENGTH)

    class Meta:
        app_label = "mailer"
        verbose_name = _("log recipient")
        verbose_name_plural = _("log recipients")
        indexes = [models.Index(fields=["address", "log"], name=ADDRESS_INDEX)]

    def __str__(self) -> str:
        return self.address
