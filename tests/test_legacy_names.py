"""django-mailer 2.3.2's engine names, patched as a 2.x project's test suite patches them (issue 16).

Each test here does what such a suite does, with ``unittest.mock.patch`` or pytest's ``monkeypatch``, and
checks that the engine behaves as 2.3.2 did under that patch.
"""

from unittest import mock

import lockfile
import pytest
from django.core import mail

import mailer
from mailer import engine
from mailer.models import PRIORITY_DEFERRED, Message
from tests.support.queueing import queue

pytestmark = pytest.mark.django_db(transaction=True)  # send_loop() closes the connection of a test transaction


def test_send_loop_sleeps_on_a_queue_of_deferred_mail_and_sends_once_there_is_more():
    with mock.patch("mailer.engine.send_all", side_effect=StopIteration) as send:
        mailer.send_mail("Subject", "Body", "deferred@example.com", ["rec@example.com"], priority=PRIORITY_DEFERRED)
        with mock.patch("time.sleep", side_effect=StopIteration) as sleep:
            with pytest.raises(StopIteration):
                engine.send_loop()
            sleep.assert_called_once_with(engine.EMPTY_QUEUE_SLEEP)
            send.assert_not_called()

        mailer.send_mail("Subject", "Body", "sender@example.com", ["rec@example.com"])
        with pytest.raises(StopIteration):
            engine.send_loop()
        send.assert_called_once()


def test_the_2_x_module_names_hold_the_settings(settings):
    settings.MAILER_EMPTY_QUEUE_SLEEP = 12
    settings.MAILER_LOCK_WAIT_TIMEOUT = 3
    settings.MAILER_LOCK_PATH = "/tmp/elsewhere"
    assert (engine.EMPTY_QUEUE_SLEEP, engine.LOCK_WAIT_TIMEOUT, engine.LOCK_PATH) == (12, 3, "/tmp/elsewhere")
    settings.MAILER_EMPTY_QUEUE_SLEEP = 4
    assert engine.EMPTY_QUEUE_SLEEP == 4  # read when asked, not at import
    with pytest.raises(AttributeError):
        engine.NO_SUCH_NAME  # noqa: B018


def test_a_patched_empty_queue_sleep_is_the_one_slept_and_the_setting_is_live_again_after(settings, monkeypatch):
    mailer.send_mail("Subject", "Body", "deferred@example.com", ["rec@example.com"], priority=PRIORITY_DEFERRED)
    with (
        mock.patch("mailer.engine.EMPTY_QUEUE_SLEEP", 0.25),
        mock.patch("time.sleep", side_effect=StopIteration) as sleep,
    ):
        with pytest.raises(StopIteration):
            engine.send_loop()
    sleep.assert_called_once_with(0.25)

    # pytest's monkeypatch puts the old value back by assignment: the setting must still be read after.
    monkeypatch.setattr(engine, "EMPTY_QUEUE_SLEEP", 0.5)
    monkeypatch.undo()
    settings.MAILER_EMPTY_QUEUE_SLEEP = 11
    with mock.patch("time.sleep", side_effect=StopIteration) as sleep, pytest.raises(StopIteration):
        engine.send_loop()
    sleep.assert_called_once_with(11)


class StandInLock:
    """What a 2.x test suite puts in place of ``lockfile.FileLock``: a path, ``acquire(timeout)``, ``release()``."""

    def __init__(self, path, calls, raises=None):
        self.path, self.calls, self.raises = path, calls, raises

    def acquire(self, timeout=None):
        self.calls.append(("acquire", self.path, timeout))
        if self.raises is not None:
            raise self.raises("held")

    def release(self):
        self.calls.append(("release", self.path))


@pytest.mark.parametrize("raises", [None, lockfile.AlreadyLocked, lockfile.LockTimeout])
def test_patched_lock_path_and_wait_timeout_reach_the_lock(tmp_path, monkeypatch, raises):
    calls = []
    path = str(tmp_path / "custom")
    monkeypatch.setattr(lockfile, "FileLock", lambda p: StandInLock(p, calls, raises))
    monkeypatch.setattr(engine, "LOCK_PATH", path)
    monkeypatch.setattr(engine, "LOCK_WAIT_TIMEOUT", 9)
    queue("one")

    result = engine.send_all()

    if raises is None:
        assert result.sent == 1 and calls == [("acquire", path, 9), ("release", path)]
    else:
        assert result is None and calls == [("acquire", path, 9)] and Message.objects.count() == 1


def test_send_all_calls_the_engines_prioritize_under_the_lock_and_releases_it_when_that_raises(monkeypatch):
    order = []
    monkeypatch.setattr(engine, "acquire_lock", lambda: (order.append("acquire"), (True, "the lock"))[1])
    monkeypatch.setattr(engine, "release_lock", lambda lock: order.append(("release", lock)))
    monkeypatch.setattr(engine, "prioritize", mock.Mock(side_effect=RuntimeError("prioritize broke")))
    queue("one")

    with pytest.raises(RuntimeError, match="prioritize broke"):
        engine.send_all()

    assert order == ["acquire", ("release", "the lock")]
    engine.prioritize.assert_called_once_with(None)
    assert Message.objects.count() == 1 and mail.outbox == []


def test_a_patched_prioritize_decides_what_is_sent(monkeypatch):
    queue("wanted")
    queue("not this time")
    wanted = Message.objects.order_by("pk")[:1].values_list("pk", flat=True)
    real = engine.prioritize
    monkeypatch.setattr(engine, "prioritize", lambda queryset=None: real(Message.objects.filter(pk__in=list(wanted))))

    assert engine.send_all().sent == 1
    assert [m.subject for m in mail.outbox] == ["wanted"]


def test_a_patched_acquire_lock_that_fails_leaves_the_queue_alone(monkeypatch):
    monkeypatch.setattr(engine, "acquire_lock", lambda: (False, None))
    released = mock.Mock()
    monkeypatch.setattr(engine, "release_lock", released)
    queue("one")

    assert engine.send_all() is None
    released.assert_not_called()
    assert Message.objects.count() == 1
