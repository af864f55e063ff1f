"""Watching a worker: Prometheus metrics, liveness that reflects progress, readiness, JSON logs.

Each worker process serves `/metrics`, `/livez` and `/readyz` over HTTP on the first free port
from `DUPFINDER_HTTP_PORT` up (so the processes of one worker take consecutive ports).

- `/livez` fails (503) when a worker thread has died, when a hash thread has been busy with one
  image for longer than the fetch deadline plus `DUPFINDER_HASH_TIME_S`, or when messages are in
  flight and none has finished for `DUPFINDER_LIVENESS_TIMEOUT_S`: a stuck worker, whatever its
  PID says. An idle worker is alive.
- `/readyz` fails when RabbitMQ or MongoDB does not answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

#: Ids of what is being handled (portal, asset, request, command, message), merged into every
#: log line written while handling it.
LOG_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "dupfinder_log_context",
    default={},  # noqa: B039 - never mutated, only replaced
)

REGISTRY = CollectorRegistry(auto_describe=True)
MESSAGES = Counter(
    "dupfinder_messages_total",
    "Messages handled, by actor and outcome",
    ["actor", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "dupfinder_dead_lettered_total",
    "Messages sent to a dead-letter queue",
    ["actor"],
    registry=REGISTRY,
)
ASSETS_HASHED = Counter(
    "dupfinder_assets_hashed_total",
    "Assets hashed, by decoder path",
    ["decoder"],
    registry=REGISTRY,
)
ASSETS_FAILED = Counter(
    "dupfinder_assets_failed_total",
    "Assets marked failed, by reason",
    ["reason"],
    registry=REGISTRY,
)
HASH_SECONDS = Histogram(
    "dupfinder_hash_seconds",
    "Fetching and hashing one image",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SEARCH_SECONDS = Histogram(
    "dupfinder_search_seconds",
    "Answering one find-duplicates request",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SEARCH_SETS = Histogram(
    "dupfinder_search_sets",
    "Duplicate sets in one answer",
    buckets=(0, 1, 10, 100, 1000, 10_000, 100_000),
    registry=REGISTRY,
)
COMMANDS = Counter(
    "dupfinder_commands_total",
    "Commands carried out, by command and outcome",
    ["command", "outcome"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("dupfinder_messages_in_flight", "Messages being handled now", registry=REGISTRY)

SEARCH_CACHE_READS = Counter(
    "dupfinder_search_cache_reads_total",
    "Reads of a portal's search columns: full (not cached) or refresh (what changed)",
    ["kind"],
    registry=REGISTRY,
)
UPLOAD_WRITES = Counter(
    "dupfinder_upload_writes_total",
    "Database writes of uploads' states: pending, hashed or failed",
    ["state"],
    registry=REGISTRY,
)
SEARCH_CACHE_BYTES = Gauge(
    "dupfinder_search_cache_bytes",
    "Estimated memory of the search columns this process keeps",
    registry=REGISTRY,
)


class BusyThreads:
    """When each busy thread of a pool started its current task: a thread that never comes
    back (a read no deadline reaches, a decoder that loops) shows as one that is busy too long,
    which message counts alone cannot tell from a slow day."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Count the calling thread busy for the duration of the block."""
        key = threading.get_ident()
        with self._lock:
            self._started[key] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._started.pop(key, None)

    def longest_s(self) -> float:
        """How long the longest-busy thread has been at its task (0 when none is busy)."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest


#: The hashing threads of this process (fetch, decode, hash).
HASHING = BusyThreads()


class Watch(Middleware):
    """Counts messages, tracks progress for `/livez` and serves the HTTP endpoints."""

    def __init__(
        self,
        *,
        port: int,
        liveness_timeout_s: float,
        ready_check: Callable[[], list[str]],
        stuck_after_s: float = float("inf"),
        busy: BusyThreads = HASHING,
    ) -> None:
        self._port = port
        self._liveness_timeout_s = liveness_timeout_s
        self._stuck_after_s = stuck_after_s
        self._busy = busy
        self._ready_check = ready_check
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_progress = time.monotonic()
        self._worker: Any = None
        self._server: ThreadingHTTPServer | None = None
        self.bound_port: int | None = None

    # --- Dramatiq hooks ---------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._in_flight += 1
        IN_FLIGHT.inc()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._done(message, "failed" if exception is not None else "ok")

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._done(message, "skipped")

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        DEAD_LETTERED.labels(message.actor_name).inc()

    def _done(self, message: Any, outcome: str) -> None:
        MESSAGES.labels(message.actor_name, outcome).inc()
        IN_FLIGHT.dec()
        with self._lock:
            self._in_flight -= 1
            self._last_progress = time.monotonic()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._worker = worker
        self._server, self.bound_port = _serve(self._port, self._routes())
        log.info("health and metrics on port %d", self.bound_port)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- endpoints --------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """(alive, why)."""
        workers = getattr(self._worker, "workers", [])
        dead = [t.name for t in workers if not t.is_alive()]
        if dead:
            return False, f"worker threads died: {', '.join(dead)}"
        busy_s = self._busy.longest_s()
        if busy_s > self._stuck_after_s:
            return False, (
                f"a hash thread has been busy with one image for {busy_s:.0f} s, longer than "
                f"a fetch and a hash may take ({self._stuck_after_s:.0f} s)"
            )
        with self._lock:
            in_flight, idle_s = self._in_flight, time.monotonic() - self._last_progress
        if in_flight and idle_s > self._liveness_timeout_s:
            return False, f"{in_flight} messages in flight, none finished for {idle_s:.0f} s"
        return True, f"ok: {in_flight} in flight, last finished {idle_s:.0f} s ago"

    def _routes(self) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
        def livez() -> tuple[int, str, bytes]:
            alive, why = self.liveness()
            return (200 if alive else 503), "text/plain", why.encode()

        def readyz() -> tuple[int, str, bytes]:
            problems = self._ready_check()
            body = "; ".join(problems) if problems else "ok: RabbitMQ and MongoDB answer"
            return (503 if problems else 200), "text/plain", body.encode()

        def metrics() -> tuple[int, str, bytes]:
            return 200, "text/plain; version=0.0.4", generate_latest(REGISTRY)

        return {"/livez": livez, "/readyz": readyz, "/metrics": metrics}


def _serve(
    first_port: int, routes: dict[str, Callable[[], tuple[int, str, bytes]]]
) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?")[0])
            status, kind, body = route() if route else (404, "text/plain", b"not found")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log

    for port in range(first_port, first_port + 64) if first_port else [0]:
        try:
            server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        except OSError:
            continue
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="dupfinder-http", daemon=True).start()
        return server, int(server.server_address[1])
    raise OSError(f"no free port from {first_port} to {first_port + 63}")


#: Longest log message kept, and longest traceback: Dramatiq writes a failed message's whole
#: arguments into its log line, and a 20 MB scope must not become a 20 MB line.
LOG_MESSAGE_CHARS = 2000
LOG_TRACEBACK_CHARS = 8000


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class BoundedRecords(logging.Filter):
    """Cuts every record's message and traceback to a bound, whoever logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > LOG_MESSAGE_CHARS:
            record.msg, record.args = _clip(message, LOG_MESSAGE_CHARS), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _clip(record.exc_text, LOG_TRACEBACK_CHARS)
        return True


def bound_logs() -> None:
    """Bound the records of every handler of the root logger (see `BoundedRecords`)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        if not any(isinstance(f, BoundedRecords) for f in handler.filters):
            handler.addFilter(BoundedRecords())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids in `LOG_CONTEXT`, and the
    exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **LOG_CONTEXT.get(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json_logs() -> None:
    """Make every handler of the root logger write JSON lines."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
