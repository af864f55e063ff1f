"""Concurrent single-document writes of one worker process, sent together as one `bulk_write`.

A worker process has many uploads in flight, and each ends in a write of its own. Writes sent
together cost the database server less each than the same writes sent alone (SecantusDB: about
1.4-2x less in bulks of 16, `benchmarks/writes.py`; its cost is mostly per document, so no
grouping makes a write free), and one round trip serves them all. Each writer still awaits its
own write: an upload is acknowledged (and its result published) only once the server has
confirmed that upload's document.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

#: MongoDB's code for a duplicate key.
DUPLICATE_KEY = 11000

#: The settings' defaults (`DUPFINDER_WRITE_BATCH`, `DUPFINDER_WRITE_WINDOW_MS`).
MAX_WRITES = 64
WINDOW_MS = 10.0


@dataclass(frozen=True)
class Written:
    """What became of one write of a batch: applied, or refused with a write error's code."""

    error_code: int | None = None

    @property
    def duplicate_key(self) -> bool:
        return self.error_code == DUPLICATE_KEY


class WriteBatcher:
    """Gathers the writes of one collection for up to `window_s`, or `max_writes` of them, and
    sends them as one unordered `bulk_write`.

    Lives on the event loop that owns the collection. Writes in one batch must not depend on
    each other's order (unordered: the server may apply them in any order), which holds for the
    worker's writes: each names one asset and is idempotent. An error of the whole request (the
    server unreachable, a write-concern failure) is raised to every writer of the batch, to be
    retried as each would have been alone. `max_writes=1` sends each write on its own.
    """

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        *,
        max_writes: int = MAX_WRITES,
        window_s: float = WINDOW_MS / 1000,
    ) -> None:
        self._collection = collection
        self._max = max_writes
        self._window_s = window_s
        self._waiting: list[tuple[InsertOne[Any] | UpdateOne, asyncio.Future[Written]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.requests = 0
        """Requests sent so far (for the benchmark's figures)."""

    async def write(self, operation: InsertOne[Any] | UpdateOne) -> Written:
        """Send `operation` with the others of its batch; returns once the server answered."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Written] = loop.create_future()
        self._waiting.append((operation, done))
        if len(self._waiting) >= self._max:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        return await done

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._sending.discard)

    async def _send(
        self, batch: list[tuple[InsertOne[Any] | UpdateOne, asyncio.Future[Written]]]
    ) -> None:
        self.requests += 1
        errors: dict[int, int] = {}
        try:
            await self._collection.bulk_write([op for op, _ in batch], ordered=False)
        except BulkWriteError as e:
            if e.details.get("writeConcernErrors"):
                _fail(batch, e)  # not known to be durable: every writer retries
                return
            errors = {error["index"]: error["code"] for error in e.details["writeErrors"]}
        except Exception as e:  # any failure of the request is each writer's failure
            _fail(batch, e)
            return
        for index, (_op, done) in enumerate(batch):
            if not done.done():
                done.set_result(Written(errors.get(index)))


def _fail(
    batch: list[tuple[InsertOne[Any] | UpdateOne, asyncio.Future[Written]]], error: BaseException
) -> None:
    for _op, done in batch:
        if not done.done():
            done.set_exception(error)
