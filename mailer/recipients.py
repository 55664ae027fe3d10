"""The other addresses of each log entry, one row each: with the entry's first, what a search by address reads.

A log row keeps its recipients in one column (:mod:`mailer.searchcols`), which a database can only scan for
an address in the middle of it, and its first address in an indexed column of its own. :class:`LogRecipient`
holds each other address of each entry (To, Cc and Bcc, lower-cased) with an index on ``(address, log)``:
finding every entry sent to ``bob@example.com`` reads the two indexes, then those entries, on every database.
Written with the log rows (:func:`mailer.writes.insert_logs`) and deleted with them by Django
(``on_delete=CASCADE``, in every ORM delete; there is no constraint in the database, for the senders' sake).
"""

from django.db import models
from django.utils.translation import gettext_lazy as _

from mailer.searchcols import ADDRESS_LENGTH

ADDRESS_INDEX = "mailer_logrecipient_addr_idx"


class LogRecipient(models.Model):
    """One address, not the first, of one log entry."""

    id = models.BigAutoField(auto_created=True, primary_key=True, verbose_name="ID")
    # No constraint in the database: checking it would cost every address row written by a sender (one lookup
    # of the entry each, at commit). The rows are written with their entry, and Django deletes them with it.
    log = models.ForeignKey(
        "mailer.MessageLog", on_delete=models.CASCADE, related_name="recipient_rows", db_constraint=False
    )
    address = models.CharField(_("address"), max_length=ADDRESS_LENGTH)

    class Meta:
        app_label = "mailer"
        verbose_name = _("log recipient")
        verbose_name_plural = _("log recipients")
        indexes = [models.Index(fields=["address", "log"], name=ADDRESS_INDEX)]

    def __str__(self) -> str:
        return self.address
