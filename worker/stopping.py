"""Stopping a worker process within a bounded grace time, however often it is told to stop.

Dramatiq's worker processes take a second SIGTERM as "kill now" and call `sys.exit` from the
signal handler. Signalling the whole process group (systemd's default `KillMode=control-group`,
`timeout`, `kill -TERM -PGID`) delivers two at once: one from the sender and one that the main
process forwards. The `sys.exit` then lands in the middle of the graceful stop, skips the
middleware that shuts the thread pools down, and the interpreter waits for ever on threads that
nobody stops.

`GracefulStop` replaces that handler in each worker process: the first SIGTERM starts Dramatiq's
graceful stop (in-flight messages finish, prefetched ones go back to RabbitMQ), repeated ones
are ignored, and a watchdog ends the process with `os._exit` if it has not exited `grace_s`
seconds after the first. What was in flight then is still unacknowledged, so RabbitMQ
redelivers it when the connections drop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

import dramatiq
from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)

#: Exit status of a worker process that the watchdog ended (Dramatiq's "killed").
EXIT_OVERDUE = 3


class GracefulStop(Middleware):
    """One stop per process, within `grace_s` seconds of the first SIGTERM."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._stopping = threading.Event()

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # As soon as the broker module is loaded in a worker process, before the worker boots:
        # booting (opening the store, compiling loops, declaring queues) starts threads and
        # can take seconds, and a group SIGTERM in that window met Dramatiq's "kill now".
        if threading.current_thread() is not threading.main_thread():
            return
        dramatiqs = signal.getsignal(signal.SIGTERM)
        # Only in Dramatiq's own worker processes: a program that embeds a Worker (the tests)
        # keeps its own signal handling.
        if not callable(dramatiqs) or getattr(dramatiqs, "__module__", "") != "dramatiq.cli":
            return

        def on_stop(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                return  # already stopping: a repeated signal must not turn into an abrupt exit
            self._stopping.set()
            threading.Thread(target=self._watchdog, name="dupfinder-stop", daemon=True).start()
            dramatiqs(signum, frame)

        signal.signal(signal.SIGTERM, on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_stop)

    def _watchdog(self) -> None:
        started = time.monotonic()
        log.info("stopping: in-flight messages have %.0f s to finish", self.grace_s)
        time.sleep(self.grace_s)
        log.warning(
            "still running %.0f s after SIGTERM: exiting now; unfinished messages stay "
            "unacknowledged and RabbitMQ redelivers them",
            time.monotonic() - started,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_OVERDUE)
