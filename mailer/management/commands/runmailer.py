import logging
import threading

from mailer import smtp
from mailer.engine import send_loop
from mailer.management.base import SenderCommand

logger = logging.getLogger(__name__)


class Command(SenderCommand):
    help = "Send mail continuously: a pass whenever the queue is not empty, else a nap of MAILER_EMPTY_QUEUE_SLEEP."
    command_name = "runmailer"
    logger = logger
    banner = "Starting django-mailer send loop. Quit with CONTROL-C."

    def make_sender(self, on_pass, on_message):
        return _Loop(on_pass, on_message, self.heartbeat.committed)

    def stopped(self, status):
        if self.verbosity >= 1:
            self.stdout.write("Stopped.")


class _Loop:
    """:func:`~mailer.engine.send_loop` as a sender: runs until :meth:`stop`."""

    def __init__(self, on_pass, on_message, on_commit):
        self.on_pass = on_pass
        self.on_message = on_message
        self.on_commit = on_commit
        self.stopping = threading.Event()

    def run(self):
        send_loop(
            stop=self.stopping,
            on_pass=self.on_pass,
            carry_on=True,
            on_message=self.on_message,
            on_commit=self.on_commit,
        )
        return 0

    def stop(self, *args):
        self.stopping.set()
        smtp.interrupt_soon()
