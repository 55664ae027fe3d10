"""A tiny SMTP relay on 127.0.0.1 for the demo: it takes mail, and refuses some recipients on purpose.

Just enough SMTP for Django's SMTP backend (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), with no
dependency. ``refuse`` maps an address to the reply its RCPT gets: a 5xx refuses it for good (the
sender gives the message up), a 4xx for now (the sender tries again later). Not for real mail.
"""

from __future__ import annotations

import socketserver
import threading
from email.parser import BytesHeaderParser


class _Session(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 demo relay ready")
        sender, recipients = None, []
        for raw in self.rfile:
            command = raw.decode("utf-8", "replace").strip()
            verb, _, argument = command.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.reply("250-demo relay")
                self.reply("250 8BITMIME")
            elif verb in ("HELO", "NOOP"):
                self.reply("250 OK")
            elif verb == "MAIL":
                sender, recipients = _address(argument), []
                self.reply("250 2.1.0 OK")
            elif verb == "RCPT":
                address = _address(argument)
                refusal = self.server.refuse.get(address.lower())
                if refusal:
                    self.reply(refusal)
                else:
                    recipients.append(address)
                    self.reply("250 2.1.5 OK")
            elif verb == "DATA":
                if not recipients:
                    self.reply("554 5.5.1 No valid recipients")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = b"".join(iter(lambda: self._data_line(), None))
                self.server.received.append((sender, recipients, BytesHeaderParser().parsebytes(data)["Subject"]))
                self.reply("250 2.0.0 Accepted")
                sender, recipients = None, []
            elif verb == "RSET":
                sender, recipients = None, []
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not recognized")

    def _data_line(self) -> bytes | None:
        line = self.rfile.readline()
        if not line or line.rstrip(b"\r\n") == b".":
            return None
        return line[1:] if line.startswith(b"..") else line


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, refuse: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.refuse = {address.lower(): reply for address, reply in refuse.items()}
        self.received: list[tuple[str | None, list[str], str | None]] = []


def _address(argument: str) -> str:
    """``FROM:<ann@example.com> SIZE=12`` -> ``ann@example.com``."""
    _, _, rest = argument.partition(":")
    return rest.strip().split(" ")[0].strip("<>")


class Relay:
    """``with Relay(refuse) as relay:`` a relay on ``relay.port``; ``relay.received`` lists what it took."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.server = _Server(refuse or {})
        self.port = self.server.server_address[1]
        self.received = self.server.received
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-relay", daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
