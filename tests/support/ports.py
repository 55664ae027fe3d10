"""Free TCP ports on loopback, for the servers the tests start (SMTP sinks and relays, PostgreSQL, runserver)."""

import socket
from collections.abc import Callable
from typing import TypeVar

Server = TypeVar("Server")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it before the caller binds it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_on_a_free_port(start: Callable[[int], Server], host: str = "127.0.0.1", attempts: int = 5) -> Server:
    """``start(port)`` with a free port; with another one when it raises ``OSError`` (the port was taken
    between :func:`free_port` and the server's bind), up to ``attempts`` times."""
    for attempt in range(attempts):
        try:
            return start(free_port(host))
        except OSError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
