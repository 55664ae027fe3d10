import json
import sys

from django.core.management.base import CommandError
from django.utils import timezone

from mailer import staging
from mailer.choices import Result
from mailer.management.base import MailerCommand
from mailer.management.options import non_negative_int
from mailer.metrics import prometheus_text
from mailer.senders import sender_statuses, senders_json, senders_table
from mailer.status import RESULT_NAMES, QueueStatus, problems, queue_status, short_duration

EXIT_CHECK_FAILED = 1


class Command(MailerCommand):
    help = (
        "Show the mail queue by priority, the messages waiting for a retry or scheduled for later, the age of the "
        "oldest message due, the log of the last hour and day and the relays paused because they asked to slow "
        "down, and the senders running on every host (and those gone without a word). With --max-age or "
        "--max-deferred, exit with status 1 when the queue is stuck."
    )
    # A monitoring probe: quick, and nothing on stderr but the reasons it fails.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
        parser.add_argument(
            "--prometheus", action="store_true", help="Print the figures as Prometheus metrics instead of a table."
        )
        parser.add_argument(
            "--max-age",
            type=non_negative_int,
            metavar="SECONDS",
            help=(
                "Fail (exit status 1) when a message due to be sent has waited longer than this since it fell "
                "due. Messages waiting for a retry, scheduled for later, deferred or waiting behind a paused relay "
                "do not count."
            ),
        )
        parser.add_argument(
            "--max-deferred",
            type=non_negative_int,
            metavar="N",
            help="Fail (exit status 1) when more than N messages are deferred.",
        )

    def handle(self, *args, **options):
        if options["json"] and options["prometheus"]:
            raise CommandError("--json and --prometheus cannot be combined", returncode=2)
        # The metrics count the whole log too (mailer_log_entries); the table and --json read its last day only.
        status = queue_status(whole_log=options["prometheus"])
        if options["prometheus"]:
            self.stdout.write(prometheus_text(status), ending="")
        elif options["json"]:
            self.stdout.write(
                json.dumps({**status.as_dict(), "senders": senders_json(sender_statuses(status.checked_at))})
            )
        else:
            self.stdout.write("\n".join([self.table(status), *senders_table(sender_statuses(status.checked_at))]))
            notice = staging.notice()
            if notice is not None:  # a staging server: the mail goes elsewhere
                self.stdout.write(f"\nStaging\n  {notice}")
        found = problems(status, options["max_age"], options["max_deferred"])
        if found:
            self.stdout.flush()
            for problem in found:
                self.stderr.write(f"mailer_status: {problem}")
            sys.exit(EXIT_CHECK_FAILED)

    @staticmethod
    def table(status: QueueStatus) -> str:
        def when(moment, seconds, relative="{} ago"):
            if moment is None:
                return "-"
            if timezone.is_aware(moment):
                moment = timezone.localtime(moment)
            return f"{moment:%Y-%m-%d %H:%M:%S %Z}".rstrip() + f" ({relative.format(short_duration(seconds))})"

        lines = [
            "Queue",
            f"  high      {status.high:>9}",
            f"  medium    {status.medium:>9}",
            f"  low       {status.low:>9}",
            f"  waiting   {status.waiting:>9}",
            f"  scheduled {status.scheduled:>9}",
            f"  deferred  {status.deferred:>9}",
            # Only when some row has a priority set by hand: the senders send those rows too.
            *([f"  other     {status.other:>9}"] if status.other else []),
            f"  total     {status.total:>9}",
            f"  oldest    {when(status.oldest_queued, status.oldest_queued_age)}",
            f"  next retry  {when(status.next_retry, status.next_retry_in, 'in {}')}",
            f"  next scheduled  {when(status.next_scheduled, status.next_scheduled_in, 'in {}')}",
            "",
            f"Log         {'last hour':>9}  {'last day':>9}",
        ]
        for code, name in RESULT_NAMES.items():
            hour, day = getattr(status.last_hour, name), getattr(status.last_day, name)
            lines.append(f"  {Result(code).word:<10}{hour:>9}  {day:>9}")
        lines.append(f"  last success  {when(status.last_success, status.last_success_age)}")
        if status.paused:  # a relay asked to slow down: the senders send it nothing until then
            lines += ["", "Paused relays"]
            for relay, until in status.paused:
                seconds = (until - status.checked_at).total_seconds()
                lines.append(f"  {relay:<9} until {when(until, seconds, 'in {}')}")
            lines.append(f"  due messages behind them {status.behind_pauses:>9}")
        return "\n".join(lines)
