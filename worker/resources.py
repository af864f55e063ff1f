"""The per-process resources of a worker, owned by one Dramatiq middleware.

The MongoDB client binds to the event loop that first uses it, so it is created on Dramatiq's
event-loop thread when the worker boots, never at import time; the result publisher and the
hashing threads are created and closed alongside it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware
from PIL import Image

from worker.budget import DecodeBudget, MiB, tune_allocator
from worker.column_cache import ColumnCache
from worker.config import Settings, get_settings
from worker.core.compiled import compile_ahead
from worker.core.shrink import uses_native
from worker.readiness import unreachable
from worker.results import ResultPublisher
from worker.store import AssetStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What an actor needs to do its work."""

    settings: Settings
    store: AssetStore
    publisher: ResultPublisher
    hash_pool: ThreadPoolExecutor
    decode_budget: DecodeBudget
    columns: ColumnCache


class Resources(Middleware):
    """Creates the runtime at worker boot and closes it at shutdown."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        """The live runtime; only valid inside a booted worker."""
        if self._runtime is None:
            raise RuntimeError("the worker's resources are not open (is the worker booted?)")
        return self._runtime

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        settings = get_settings()
        if settings.source_roots is None:
            log.warning(
                "DUPFINDER_SOURCE_ROOTS is unset: a message can make this worker read any local "
                "file it has access to. Set it to the folders that hold the portal's images."
            )
        if settings.source_hosts is None:
            log.warning(
                "DUPFINDER_SOURCE_HOSTS is unset: a message can make this worker fetch from any "
                "host but link-local and metadata addresses. Set it to the portal's image hosts."
            )
        # Pillow warns above this many pixels and refuses above twice as many; aligning it with
        # our own limit keeps its guard in step with the one `hashing` applies.
        Image.MAX_IMAGE_PIXELS = settings.max_pixels
        # Decoded images are large and short-lived: map them on their own, so that freeing one
        # gives its memory back to the system (the process returns to its idle size).
        tune_allocator()
        # The search loops are compiled (Numba): load them from the cache, or compile them, here
        # rather than in the first search this process handles.
        started = time.perf_counter()
        compile_ahead()
        log.info("compiled loops ready in %.2f s", time.perf_counter() - started)
        # And the shrink's check against Pillow, once, before any upload: it warns when the C
        # extension is missing or disagrees, and hashing then resizes with Pillow.
        log.info("32 x 32 shrink: %s", "compiled" if uses_native() else "Pillow's resize")
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware must come before Resources")
        store = loop_thread.run_coroutine(self._open_store(settings))
        publisher = ResultPublisher(settings.amqp_url_with_defaults)
        publisher.declare()
        self._runtime = Runtime(
            settings=settings,
            store=store,
            publisher=publisher,
            hash_pool=ThreadPoolExecutor(
                settings.hash_threads, thread_name_prefix="dupfinder-hash"
            ),
            decode_budget=DecodeBudget(settings.decode_memory_mb * MiB),
            columns=ColumnCache(
                store,
                budget_bytes=settings.search_cache_mb * MiB,
                lag_s=settings.search_cache_lag_s,
                threads=settings.search_threads,
            ),
        )

    @staticmethod
    async def _open_store(settings: Settings) -> AssetStore:
        store = AssetStore.from_settings(settings)
        try:
            await store.ensure_indexes()
        except Exception:
            # The database may come up after the worker: messages then retry until it does, and
            # the indexes are created by the next boot. Uniqueness of (portal_id, asset_id) is
            # what idempotent upserts rely on, so this is logged loudly.
            log.exception("could not create MongoDB indexes at boot")
        return store

    def ready_problems(self) -> list[str]:
        """What keeps this worker from working now (empty = ready), for /readyz."""
        import asyncio

        import pika

        from schemas.publisher import node_parameters

        runtime = self._runtime
        if runtime is None:
            return ["worker not booted"]
        problems = []
        nodes = node_parameters(runtime.settings.amqp_url_with_defaults)
        for parameters in nodes:
            parameters.socket_timeout = 2
            parameters.connection_attempts = 1
        try:
            pika.BlockingConnection(nodes).close()
        except Exception as e:  # any failure to connect is what this probe reports
            problems.append(unreachable("RabbitMQ", runtime.settings.amqp_url, e))
        loop_thread = get_event_loop_thread()
        try:
            if loop_thread is None:
                raise RuntimeError("event loop not running")
            loop_thread.run_coroutine(asyncio.wait_for(runtime.store.ping(), 3))
        except Exception as e:  # likewise: unreachable, timed out, or the loop is gone
            problems.append(unreachable("MongoDB", runtime.settings.mongodb_url, e))
        return problems

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # After the worker threads have finished their messages; Dramatiq emits "after" hooks in
        # reverse middleware order, so the AsyncIO loop is still running here.
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        runtime.hash_pool.shutdown(wait=True)
        runtime.publisher.close()
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(runtime.store.close())
