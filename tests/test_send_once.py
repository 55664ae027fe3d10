"""``mailer.runs.send_once()``, the pass ``send_mail`` makes, called from Python; the ``Sent: ...`` lines of
``mailer.summaries``; and the frame ``mailer.management.base.SenderCommand`` of the long-running commands."""

import io
import logging
import signal

import pytest
from django.core import mail
from django.core.management import CommandError, call_command

import mailer
from mailer.management.base import SenderCommand
from mailer.models import PRIORITY_HIGH, Message
from mailer.runs import HeldBack, send_once, signals_handled
from mailer.summaries import SendResult, describe, log_lock_held, log_sent
from tests.support.locks import lock_held_elsewhere
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db

OURS = logging.getLogger("tests.send_once")


def lines(caplog, name):
    return [r.getMessage() for r in caplog.records if r.name == name]


class Display:
    """A progress display that records what it was shown and when it was closed."""

    def __init__(self, caplog):
        self.caplog = caplog
        self.seen = []
        self.lines_when_closed = None
        self.sigterm_handler = signal.getsignal(signal.SIGTERM)

    def __call__(self, result):
        self.seen.append(result.sent)

    def close(self):
        self.lines_when_closed = len(self.caplog.records)


# --- send_once ------------------------------------------------------------------------------------------


def test_send_once_returns_what_the_pass_did_and_the_engine_logs_its_line(caplog):
    queue("one")
    queue("two")
    with caplog.at_level(logging.INFO, logger="mailer"), caplog.at_level(logging.INFO, logger=OURS.name):
        result = send_once(log=OURS)
    assert (result.sent, result.deferred) == (2, 0)
    assert len(mail.outbox) == 2
    [line] = [m for m in lines(caplog, "mailer.engine") if m.startswith("Sent:")]
    assert line == f"Sent: {result}"
    assert lines(caplog, OURS.name) == []


def test_send_once_paused_sends_nothing_makes_no_display_and_says_so(settings, caplog):
    settings.MAILER_PAUSE_SEND = True
    queue("waits")
    made = []
    with caplog.at_level(logging.INFO, logger="mailer"):
        assert send_once(progress=lambda: made.append(1)) is None
    assert mail.outbox == [] and made == []
    assert lines(caplog, "mailer.runs") == ["sending is paused (MAILER_PAUSE_SEND), quitting."]


def test_send_once_when_another_run_holds_the_lock(lock_path, caplog):
    queue("waits")
    with lock_held_elsewhere(lock_path), caplog.at_level(logging.INFO, logger=OURS.name):
        assert send_once(log=OURS) is None
    [line] = lines(caplog, OURS.name)
    assert line.startswith("Sent: nothing in ") and line.endswith(f", another run holds the lock {lock_path}.lock")


def test_send_once_closes_the_display_before_the_line_of_an_exception(failures, caplog):
    failures["poison"] = ValueError("poisoned")
    queue("good", priority=PRIORITY_HIGH)
    queue("poison")
    with caplog.at_level(logging.INFO, logger=OURS.name):
        display = None

        def make():
            nonlocal display
            display = Display(caplog)
            return display

        with pytest.raises(ValueError):
            send_once(progress=make, log=OURS)
    assert display.seen[0] == 1
    [line] = lines(caplog, OURS.name)
    assert line.startswith("Sent: sent 1, deferred 0, skipped 0, failed 1 in ")
    assert line.endswith(", then stopped by ValueError: poisoned")
    assert caplog.records[display.lines_when_closed].getMessage() == line  # closed just before the line


def test_send_once_handles_sigterm_during_the_pass_only_when_asked(caplog):
    before = signal.getsignal(signal.SIGTERM)
    queue("one")
    displays = []

    def make():
        displays.append(Display(caplog))
        return displays[-1]

    send_once(progress=make)
    queue("two")
    send_once(progress=make, stop_on_sigterm=False)
    assert displays[0].sigterm_handler is not before
    assert displays[1].sigterm_handler is before
    assert signal.getsignal(signal.SIGTERM) is before


def test_held_back_mail_raises_after_the_pass_and_send_mail_exits_non_zero(settings):
    key = settings.SECRET_KEY
    settings.SECRET_KEY = "another key " * 5
    mailer.send_mail("held", "body", "from@example.com", ["to@example.com"])
    settings.SECRET_KEY = key
    mailer.send_mail("sent", "body", "from@example.com", ["to@example.com"])
    with pytest.raises(HeldBack) as raised:
        send_once()
    assert (raised.value.result.sent, raised.value.result.held) == (1, 1)
    text = "1 message(s) held back: this process cannot decode them (see the errors above)"
    assert str(raised.value) == text
    mailer.send_mail("sent too", "body", "from@example.com", ["to@example.com"])
    with pytest.raises(CommandError, match=r"^1 message\(s\) held back: "):
        call_command("send_mail")
    # Only mail it cannot decode is left: the engine's QueueNotDecodable, an error of the command too.
    with pytest.raises(CommandError, match=r"^stopped: none of the 1 message\(s\) claimed could be decoded"):
        call_command("send_mail")
    assert Message.objects.count() == 1


# --- the Sent: lines ------------------------------------------------------------------------------------


def test_the_line_of_a_complete_pass_carries_its_figures(caplog):
    result = SendResult(sent=3, deferred=1, seconds=0.5)
    with caplog.at_level(logging.INFO, logger=OURS.name):
        log_sent(OURS, result)
        log_sent(OURS, result, stopped_by=KeyboardInterrupt())
        log_lock_held(OURS, 0.004)
    complete, stopped, held = caplog.records
    assert complete.getMessage() == "Sent: sent 3, deferred 1, skipped 0, failed 0 in 0.50s"
    assert (complete.sent, complete.deferred, complete.duration) == (3, 1, 0.5)
    assert (
        stopped.getMessage()
        == "Sent: sent 3, deferred 1, skipped 0, failed 0 in 0.50s, then stopped by KeyboardInterrupt"
    )
    assert not hasattr(stopped, "sent")
    assert held.getMessage().startswith("Sent: nothing in 0.00s, another run holds the lock ")


def test_describe_puts_an_exception_on_one_line():
    assert describe(ValueError("two\n  lines")) == "ValueError: two lines"
    assert describe(RuntimeError()) == "RuntimeError"


# --- the frame of the long-running commands -------------------------------------------------------------


class StubSender:
    def __init__(self, on_pass, status):
        self.on_pass, self.status, self.stopped = on_pass, status, []

    def run(self):
        os_kill_self = signal.getsignal(signal.SIGINT)
        os_kill_self(signal.SIGINT, None)  # as CONTROL-C would
        self.on_pass(SendResult(sent=2))
        return self.status

    def stop(self, *args):
        self.stopped.append(args[0])


class StubCommand(SenderCommand):
    command_name = "runmailer"
    logger = OURS
    banner = "Starting the stub."
    status = 0

    def make_sender(self, on_pass, on_message):
        self.sender = StubSender(on_pass, self.status)
        return self.sender


@pytest.mark.parametrize("status", [0, 3])
def test_the_sender_frame(caplog, status):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    command = StubCommand(stdout=io.StringIO(), stderr=io.StringIO())
    command.status = status
    with caplog.at_level(logging.INFO, logger=OURS.name):
        if status:
            with pytest.raises(SystemExit) as raised:
                call_command(command)
            assert raised.value.code == status
        else:
            call_command(command)
    assert command.sender.stopped == [signal.SIGINT]
    assert command.stdout.getvalue().splitlines()[1:] == ["Starting the stub."]
    [line] = lines(caplog, OURS.name)
    assert line.startswith("Stopped: 1 pass, sent 2, deferred 0, skipped 0, failed 0 in ")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_signals_handled_puts_the_handlers_back_after_an_exception():
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(RuntimeError), signals_handled(print, signal.SIGUSR1):
        assert signal.getsignal(signal.SIGUSR1) is print
        raise RuntimeError
    assert signal.getsignal(signal.SIGUSR1) is before
