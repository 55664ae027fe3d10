"""``wait_until()``: poll for a state another thread or process brings about, or fail the test."""

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 30,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> object:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value, and return that value.

    After ``timeout`` seconds, fail the test with ``message`` (a string, or a callable giving one, for a log
    read at that moment). For a state with no event to wait on: a row in a database another process writes,
    a line in a child's log. Where there is an event (``SMTPSink.wait_for``, ``Popen.wait``), wait on it.
    """
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout}s)")
        time.sleep(interval)
    return result
