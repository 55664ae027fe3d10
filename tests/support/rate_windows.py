"""Checking rate-limit grants against their limits, and child processes that reserve tokens.

A grant list is ``[(time, count), ...]`` (time: an aware datetime, or whole microseconds since the epoch);
a window of ``T`` seconds ending at ``t`` is ``(t - T, t]``, as in :mod:`mailer.ratelimits`.
"""

from __future__ import annotations

import bisect
import datetime
import json
import subprocess

from tests.support.procs import popen_manage

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MICROSECOND = datetime.timedelta(microseconds=1)


def _micros(value) -> int:
    """A datetime, or whole microseconds since the epoch, as whole microseconds: exact, unlike a float."""
    return (value - EPOCH) // MICROSECOND if isinstance(value, datetime.datetime) else int(value)


class Timeline:
    """Grants in time order, with running sums (a Fenwick tree): the tokens of any window in two bisections.

    Grants are added in time order (:meth:`add`, or all at once to the constructor, which sorts them);
    tokens given back later change a grant's count (:meth:`change`).
    """

    def __init__(self, grants=()):
        self.times: list[int] = []
        self.tree: list[int] = [0]
        for at, count in sorted((_micros(at), count) for at, count in grants):
            self.add(at, count)

    def add(self, at, count: int) -> int:
        """Add a grant no earlier than the last one; its index, for :meth:`change`."""
        at = _micros(at)
        assert not self.times or at >= self.times[-1], "grants must be added in time order"
        self.times.append(at)
        index = len(self.times)
        # A new last node covers the (index & -index) entries ending at it: the sums of the nodes below it.
        below, child = 0, index - 1
        while child > index - (index & -index):
            below += self.tree[child]
            child -= child & -child
        self.tree.append(below + count)
        return index - 1

    def change(self, position: int, delta: int) -> None:
        index = position + 1
        while index < len(self.tree):
            self.tree[index] += delta
            index += index & -index

    def _prefix(self, count: int) -> int:
        total = 0
        while count:
            total += self.tree[count]
            count -= count & -count
        return total

    def in_window(self, end, seconds: float) -> int:
        """Tokens granted in ``(end - seconds, end]``."""
        end = _micros(end)
        return self._prefix(bisect.bisect_right(self.times, end)) - self._prefix(
            bisect.bisect_right(self.times, end - round(seconds * 1_000_000))
        )

    def fullest(self, seconds: float) -> int:
        """The most tokens any window of ``seconds`` holds (the fullest window ends at some grant)."""
        return max((self.in_window(at, seconds) for at in self.times), default=0)

    def total(self) -> int:
        return self._prefix(len(self.times))


# Reserves tokens of relay "default" from START to END (Unix times), as a sender would: as many as it
# wants (1 to 4), giving one back now and then as if a delivery did not happen, and sleeping until
# retry_at when refused. Prints its grants as JSON: [[microseconds since the epoch, granted, kept], ...].
RESERVING_CHILD = """
import datetime, json, random, time
from mailer import ratelimits
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
start, end = {start!r}, {end!r}
rng = random.Random({seed!r})
time.sleep(max(0.0, start - time.time()))
grants = []
while time.time() < end:
    wanted = rng.randint(1, 4)
    grant = ratelimits.reserve("default", wanted)
    kept = grant.granted
    if kept and rng.random() < 0.2:
        kept -= ratelimits.give_back(grant, 1)
    grants.append([(grant.at - EPOCH) // datetime.timedelta(microseconds=1), grant.granted, kept])
    if grant.granted < wanted:
        time.sleep(max(0.0, min(end, grant.retry_at.timestamp()) - time.time()))
print("GRANTS " + json.dumps(grants))
"""


def reserving_children(env: dict, count: int, start: float, end: float) -> list[subprocess.Popen]:
    """Start ``count`` processes running :data:`RESERVING_CHILD` against the project database of ``env``."""
    return [
        popen_manage("shell", "-c", RESERVING_CHILD.format(start=start, end=end, seed=n), env=env) for n in range(count)
    ]


def collect_grants(children: list[subprocess.Popen], timeout: float = 60) -> list[tuple[int, int, int]]:
    """Wait for every child; all their grants as (time, granted, kept) (fails the test if a child failed)."""
    grants = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert child.returncode == 0, err
        line = next(line for line in out.splitlines() if line.startswith("GRANTS "))
        grants.extend(tuple(grant) for grant in json.loads(line.removeprefix("GRANTS ")))
    return grants
