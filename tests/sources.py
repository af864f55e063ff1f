"""A local HTTP image server whose answers a test scripts (errors first, then the image)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
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
        #: The Host header of every request answered with the body or a status.
        self.hosts: list[str] = []
        self._lock = threading.Lock()

    def answer(self) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
            if self.requests <= self.failures:
                return self.status, b"try later"
            return 200, self.body


@contextmanager
def serve(source: ScriptedSource, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the source on a free port of a loopback address; yields its base URL."""

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
            source.hosts.append(self.headers.get("Host", ""))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_raw(script: Callable[[socket.socket], None], *, seconds: float = 10.0) -> Iterator[str]:
    """A loopback TCP server that reads one request and then runs `script` on the connection,
    for peers no HTTP library would write (headers a line every few seconds, endless trailers).
    Every connection is closed after `seconds` at the latest; yields the base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(seconds)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                script(conn)

    def accept() -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextmanager
def unanswering_port() -> Iterator[int]:
    """A loopback port whose connections open and are never answered: a database node that is
    down as a client sees it, every request failing at the client's own deadline.

    A port nothing listens on would refuse instead, but PyMongo 4.20's server monitor sometimes
    leaves a refused connect's socket to the garbage collector when the client is closed at
    that moment; the ResourceWarning then fails whichever later test the collector runs in.
    Nothing is accepted here: the kernel completes each handshake into the backlog, and closing
    the listener resets them."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield listener.getsockname()[1]
