"""The single-document reads and writes of one worker process's uploads, sent together.

A worker process has many uploads in flight, and each begins with a look-up of its asset and
ends in a write of its own. Writes sent together cost the database server less each than the
same writes sent alone (SecantusDB: about 1.4-2x less in bulks of 16, `benchmarks/writes.py`;
its cost is mostly per document, so no grouping makes a write free), and one round trip serves
them all. Each writer still awaits its own write: an upload is acknowledged (and its result
published) only once the server has confirmed that upload's document.

Look-ups gain more from company (SecantusDB: 0.58 ms of CPU for one document's `find_one`,
0.15 ms a document in a `find` of 16), and no clock has to gather them: an upload asks for its
asset's state when it is received, but needs the answer only when a hashing thread takes it up,
which under load is several uploads later. `LookupBatcher` sends every question asked so far
when one is needed and not yet sent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

#: MongoDB's code for a duplicate key.
DUPLICATE_KEY = 11000

#: The settings' defaults (`DUPFINDER_WRITE_BATCH`, `DUPFINDER_WRITE_WINDOW_MS`).
MAX_WRITES = 64
WINDOW_MS = 200.0


@dataclass(frozen=True)
class Written:
    """What became of one write of a batch: applied, or refused with a write error's code."""

    error_code: int | None = None

    @property
    def duplicate_key(self) -> bool:
        return self.error_code == DUPLICATE_KEY


class WriteBatcher:
    """Gathers the writes of one collection for up to `window_s`, or `max_writes` of them, or
    until every writer counted as `coming` has joined but the `hashing` last, and sends them as
    one unordered `bulk_write`.

    Lives on the event loop that owns the collection. Writes in one batch must not depend on
    each other's order (unordered: the server may apply them in any order), which holds for the
    worker's writes: each names one asset and is idempotent. An error of the whole request (the
    server unreachable, a write-concern failure) is raised to every writer of the batch, to be
    retried as each would have been alone. `max_writes=1` sends each write on its own.

    `hashing` is the number of writers that may be in a hashing thread's hands: a batch does not
    wait for the last that many. Waiting for them would leave the hashing threads idle once they
    are done, for the uploads that would have followed them hold a message thread each until
    their own write is answered; going without them keeps the threads fed while the batch is
    written, so the window can be long enough to gather a batch of every message thread's
    upload (benchmarks/e2e.py).
    """

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        *,
        max_writes: int = MAX_WRITES,
        window_s: float = WINDOW_MS / 1000,
        hashing: int = 0,
    ) -> None:
        self._collection = collection
        self._max = max_writes
        self._window_s = window_s
        self._hashing = hashing
        self._waiting: list[tuple[InsertOne[Any] | UpdateOne, asyncio.Future[Written]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._coming = 0
        self.requests = 0
        """Requests sent so far (for the benchmark's figures)."""

    @contextmanager
    def coming(self) -> Iterator[None]:
        """Count a writer on its way (an upload being fetched and hashed) while in the block.

        A batch with counted writers on their way waits for them up to the window; once every
        one has joined (but the `hashing` last) it goes at once, so a lone upload is not delayed
        by the window that gathers the writes of many. (Writers never counted wait out the
        window.)
        """
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            if self._waiting and self._all_joined():
                self._flush()  # the writers still waiting need not wait for this one

    async def write(self, operation: InsertOne[Any] | UpdateOne) -> Written:
        """Send `operation` with the others of its batch; returns once the server answered."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Written] = loop.create_future()
        self._waiting.append((operation, done))
        if len(self._waiting) >= self._max or (self._coming > 0 and self._all_joined()):
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._flush)
        return await done

    def _all_joined(self) -> bool:
        """Whether every counted writer on its way but the `hashing` last waits in the batch."""
        return len(self._waiting) >= self._coming - self._hashing

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            _start(self._sending, self._send(batch))

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


def _start(sending: set[asyncio.Task[None]], request: Coroutine[Any, Any, None]) -> None:
    """Run `request` as a task held in `sending` until done (the loop keeps only weak
    references to tasks, and a request nobody holds may be collected mid-flight)."""
    task = asyncio.get_running_loop().create_task(request)
    sending.add(task)
    task.add_done_callback(sending.discard)


def _fail(
    batch: list[tuple[InsertOne[Any] | UpdateOne, asyncio.Future[Written]]], error: BaseException
) -> None:
    for _op, done in batch:
        if not done.done():
            done.set_exception(error)


class LookupBatcher:
    """Answers "what is stored for (portal_id, asset_id)?" for many askers with few queries.

    `ask` registers a question and returns at once; `answer` awaits it, first sending every
    question not yet sent if this one is among them (one `find` per portal of the batch, each
    scoped by its `portal_id`, at most `max_keys` ids each). Lives on the event loop that owns
    the collection. A failed query fails each of its askers, to be retried as each would have
    been alone.
    """

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        projection: Mapping[str, Any],
        *,
        max_keys: int = MAX_WRITES,
    ) -> None:
        self._collection = collection
        self._projection = {**projection, "asset_id": 1}
        self._max = max_keys
        self._unsent: dict[tuple[str, str], asyncio.Future[dict[str, Any] | None]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.requests = 0
        """Queries sent so far (for tests and the benchmark's figures)."""

    def ask(self, portal_id: str, asset_id: str) -> asyncio.Future[dict[str, Any] | None]:
        """Register the question; it is sent with the next batch. Askers of one asset share it."""
        key = (portal_id, asset_id)
        asked = self._unsent.get(key)
        if asked is None:
            asked = asyncio.get_running_loop().create_future()
            # Read even when nobody awaits it (an upload that failed first), so that a failed
            # query is not reported as an exception never retrieved.
            asked.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._unsent[key] = asked
            if len(self._unsent) >= self._max:
                self._flush()
        return asked

    async def answer(self, asked: asyncio.Future[dict[str, Any] | None]) -> dict[str, Any] | None:
        """The stored document's projected fields (None: no such asset), sending if need be."""
        if asked in self._unsent.values():  # a future equals only itself
            self._flush()
        return await asyncio.shield(asked)

    def _flush(self) -> None:
        batch, self._unsent = self._unsent, {}
        if batch:
            _start(self._sending, self._send(batch))

    async def _send(
        self, batch: dict[tuple[str, str], asyncio.Future[dict[str, Any] | None]]
    ) -> None:
        by_portal: dict[str, list[str]] = defaultdict(list)
        for portal_id, asset_id in batch:
            by_portal[portal_id].append(asset_id)
        for portal_id, asset_ids in by_portal.items():
            self.requests += 1
            query = {"portal_id": portal_id, "asset_id": {"$in": asset_ids}}
            try:
                found = {
                    doc.pop("asset_id"): doc
                    async for doc in self._collection.find(query, self._projection)
                }
            except Exception as e:  # the query's failure is each asker's failure
                for asset_id in asset_ids:
                    if not (asked := batch[portal_id, asset_id]).done():
                        asked.set_exception(e)
                continue
            for asset_id in asset_ids:
                if not (asked := batch[portal_id, asset_id]).done():
                    asked.set_result(found.get(asset_id))
