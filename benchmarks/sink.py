"""An SMTP server on loopback that counts what it receives, optionally answering each message slowly.

It runs in a thread of the benchmark process (aiosmtpd's event loop). For every message it records the
arrival time, the ``X-Bench-Id`` header that the children put on each queued email and its ``Message-ID``,
which gives the number of messages, of distinct messages (so duplicates) and, with the commit times of a
producer (or the ``send_at`` of scheduled mail), latency. ``delay`` makes it wait that long before
accepting each message, like a slow relay; the wait is an ``asyncio.sleep``, so other connections are
served meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter

from aiosmtpd.controller import Controller

_BENCH_ID = re.compile(rb"^X-Bench-Id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class _Handler:
    def __init__(self, sink: SMTPSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:
        arrived = time.time()
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "replace")
        head = content.split(b"\r\n\r\n", 1)[0]
        match = _BENCH_ID.search(head)
        message_id = _MESSAGE_ID.search(head)
        self.sink.record(
            match.group(1).decode("ascii", "replace") if match else None,
            arrived,
            message_id.group(1).decode("ascii", "replace") if message_id else None,
        )
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        return "250 Message accepted"


class _CountingController(Controller):
    def __init__(self, sink: SMTPSink, **kwargs) -> None:
        self.sink = sink
        super().__init__(_Handler(sink), **kwargs)

    def factory(self):  # one SMTP protocol instance per accepted connection
        self.sink.count_connection()
        return super().factory()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SMTPSink:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.port: int | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._controller: _CountingController | None = None
        self.reset()

    # Called from the server thread.
    def record(self, bench_id: str | None, arrived: float, message_id: str | None = None) -> None:
        with self._arrived:
            self.count += 1
            self.ids[bench_id] += 1
            self.message_id_counts[message_id] += 1
            if bench_id is not None and bench_id not in self.first_arrival:
                self.first_arrival[bench_id] = arrived
                self.message_ids[bench_id] = message_id
            self._arrived.notify_all()

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.connections = 0
            self.ids: Counter = Counter()
            self.message_id_counts: Counter = Counter()  # Message-ID header -> times received
            self.first_arrival: dict[str, float] = {}
            self.message_ids: dict[str, str | None] = {}  # bench id -> the Message-ID header it arrived with

    def snapshot(self) -> dict:
        with self._lock:
            distinct = len(self.ids)
            return {
                "distinct_message_ids": len(self.message_id_counts.keys() - {None}),
                "received": self.count,
                "distinct": distinct,
                "duplicates": self.count - distinct,
                "connections": self.connections,
            }

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._arrived.wait(remaining)
        return True

    def start(self) -> SMTPSink:
        for attempt in range(5):
            self.port = _free_port()
            controller = _CountingController(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
            try:
                controller.start()
            except (OSError, RuntimeError):
                if attempt == 4:
                    raise
                continue
            self._controller = controller
            break
        self.reset()  # start() opened a connection of its own to see that the server is up
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SMTPSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
