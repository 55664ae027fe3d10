"""``recording_http_server()``: an HTTP server on loopback that answers every request and remembers its path.

For tests that check a browser fetches nothing (a remote image in a hostile email): point what must not be
fetched at it, then make one request that must arrive (``wait_for``) and look at what else did.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.paths: list[str] = []
        self.changed = threading.Condition()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, path: str, timeout: float = 30) -> list[str]:
        """Every path requested so far, once ``path`` has been."""
        with self.changed:
            if not self.changed.wait_for(lambda: path in self.paths, timeout):
                raise AssertionError(f"no request for {path} in {timeout}s; got {self.paths}")
            return list(self.paths)


class _Recorder(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        server = self.server
        with server.changed:
            server.paths.append(self.path)
            server.changed.notify_all()
        body = b"recorded"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads self.server.paths
        pass


@contextmanager
def recording_http_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
