"""A local HTTP image server whose answers a test scripts (errors first, then the image)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedSource:
    """Serves `body` at any path after answering the first `failures` requests with `status`."""

    def __init__(
        self, body: bytes, *, failures: int = 0, status: int = 503, trickle_s: float = 0.0
    ) -> None:
        self.body = body
        self.failures = failures
        self.status = status
        #: With a trickle, failing requests answer 200 but send a byte every half second for
        #: this long instead of an error: a source that hangs.
        self.trickle_s = trickle_s
        self.requests = 0
        self._lock = threading.Lock()

    def answer(self) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
            if self.requests <= self.failures:
                return self.status, b"try later"
            return 200, self.body


@contextmanager
def serve(source: ScriptedSource) -> Iterator[str]:
    """Run the source on a free loopback port; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = source.answer()
            if status != 200 and source.trickle_s:
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                deadline = time.monotonic() + source.trickle_s
                while time.monotonic() < deadline:
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return  # the worker gave up on us
                    time.sleep(0.5)
                return
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
