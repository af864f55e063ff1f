"""One thread per AMQP connection that publishes: it runs every call on the connection, and keeps
the connection's heartbeats serviced while nothing is published.

pika's blocking connections are not thread-safe, and they send and read heartbeats only while
their owner calls into them. A connection that only publishes now and then therefore misses
its heartbeats whenever it idles longer than the heartbeat timeout; RabbitMQ closes it, and
the next publish finds out the hard way (an error, a reconnect, noise at shutdown). With one
owning thread that services the connection whenever it has been idle for a quarter of the
heartbeat, an idle connection stays open for as long as the process runs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pika.exceptions

T = TypeVar("T")

log = logging.getLogger(__name__)


def keep_alive(connection: Any, lost: Callable[[], None], what: str) -> None:
    """Send and read the heartbeats of an idle connection (if there is one); a connection that
    turns out to be gone is handed to `lost` (which forgets it), to be reopened on next use."""
    if connection is None:
        return
    try:
        connection.process_data_events(0)
    except (pika.exceptions.AMQPError, OSError):
        log.info("the %s connection was lost; reconnecting on next use", what)
        lost()


def service_interval_s(heartbeat_s: int | None) -> float:
    """How often an idle connection with this heartbeat timeout is serviced."""
    return max(0.25, heartbeat_s / 4) if heartbeat_s else 15.0


class ConnectionThread:
    """Runs calls one at a time on its own thread; `service` runs whenever it idles.

    `service` touches the connection (e.g. `process_data_events(0)`) and must not raise for
    a connection that is gone: it forgets it instead, and the next call reconnects.
    """

    def __init__(self, name: str, service: Callable[[], None], every_s: float) -> None:
        self._service = service
        self._every_s = every_s
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the thread; its future. Runs it at once when called from the thread."""
        future: Future[T] = Future()
        if threading.current_thread() is self._thread:
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller through the future
                future.set_exception(e)
            return future
        self._calls.put((fn, future))
        return future

    def call(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """`fn`'s result, computed on the thread (waiting at most `timeout_s`)."""
        return self.submit(fn).result(timeout_s)

    def stop(self, last: Callable[[], None] | None = None, timeout_s: float = 10.0) -> None:
        """Run `last` (closing the connection), then end the thread."""
        if last is not None:
            with contextlib.suppress(Exception):
                self.call(last, timeout_s)
        self._calls.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                item = self._calls.get(timeout=self._every_s)
            except queue.Empty:
                try:
                    self._service()
                except Exception:  # servicing must never end the thread
                    log.debug("servicing an idle connection failed", exc_info=True)
                continue
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller through the future
                future.set_exception(e)
