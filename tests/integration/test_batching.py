"""Concurrent writes sent as one request (worker.batching), against the MongoDB-protocol server:
one request for many writers, each writer its own outcome, a failed request everyone's."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.errors import ConnectionFailure

from worker.batching import WriteBatcher


def _run(mongo_url: str, body: Any) -> Any:
    async def main() -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        collection = client[f"batching_{uuid.uuid4().hex[:8]}"]["assets"]
        await collection.create_index([("portal_id", 1), ("asset_id", 1)], unique=True)
        try:
            return await body(collection)
        finally:
            await client.drop_database(collection.database.name)
            await client.close()

    return asyncio.run(main())


def test_concurrent_writes_share_one_request_and_each_gets_its_own_outcome(
    mongo_url: str,
) -> None:
    async def body(collection: Any) -> None:
        await collection.insert_one({"portal_id": "p", "asset_id": "taken"})
        batcher = WriteBatcher(collection, max_writes=100, window_s=0.05)
        writes: list[InsertOne[Any] | UpdateOne] = [
            InsertOne({"portal_id": "p", "asset_id": f"a{n}"}) for n in range(20)
        ]
        writes.append(InsertOne({"portal_id": "p", "asset_id": "taken"}))
        writes.append(UpdateOne({"portal_id": "p", "asset_id": "a0"}, {"$set": {"seen": True}}))
        outcomes = await asyncio.gather(*(batcher.write(w) for w in writes))
        assert batcher.requests == 1
        assert [o.duplicate_key for o in outcomes] == [False] * 20 + [True, False]
        assert await collection.count_documents({"portal_id": "p"}) == 21

    _run(mongo_url, body)


def test_a_full_batch_is_sent_at_once_and_a_lone_write_after_its_window(mongo_url: str) -> None:
    async def body(collection: Any) -> None:
        batcher = WriteBatcher(collection, max_writes=5, window_s=10.0)
        started = time.monotonic()
        await asyncio.gather(
            *(batcher.write(InsertOne({"portal_id": "p", "asset_id": f"a{n}"})) for n in range(5))
        )
        assert time.monotonic() - started < 5  # not the 10 s window: the batch was full
        quick = WriteBatcher(collection, max_writes=100, window_s=0.02)
        started = time.monotonic()
        await quick.write(InsertOne({"portal_id": "p", "asset_id": "lone"}))
        assert 0.015 <= time.monotonic() - started < 5
        assert (batcher.requests, quick.requests) == (1, 1)

    _run(mongo_url, body)


def test_a_failed_request_fails_every_writer_of_its_batch() -> None:
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"mongodb://127.0.0.1:{closed.getsockname()[1]}/"

    async def main() -> list[BaseException | Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, serverSelectionTimeoutMS=300
        )
        batcher = WriteBatcher(client["d"]["assets"], max_writes=10, window_s=0.01)
        try:
            return await asyncio.gather(
                *(batcher.write(InsertOne({"n": n})) for n in range(3)), return_exceptions=True
            )
        finally:
            await client.close()

    outcomes = asyncio.run(main())
    assert all(isinstance(o, ConnectionFailure) for o in outcomes), outcomes


@pytest.mark.parametrize("batch", [1, 64])
def test_the_stores_upload_writes_keep_their_meaning_batched_or_not(
    mongo_url: str, batch: int
) -> None:
    from datetime import UTC, datetime

    from schemas.messages import AssetUploaded
    from worker.store import AssetStore

    async def main() -> None:
        store = AssetStore.connect(
            mongo_url, f"batching_{uuid.uuid4().hex[:8]}", timeout_ms=2000, write_batch=batch
        )
        await store.ensure_indexes()
        try:
            uploads = [
                AssetUploaded(
                    portal_id="p",
                    asset_id=f"a{n}",
                    source="/x.png",
                    uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
                )
                for n in range(10)
            ]
            first = await asyncio.gather(*(store.mark_pending(u) for u in uploads))
            again = await asyncio.gather(*(store.mark_pending(u) for u in uploads))
            assert first == [True] * 10 and again == [False] * 10
            await store.tombstone("p", "a3", via="test", create=True)
            failed = await asyncio.gather(
                *(store.mark_failed(u, "unreadable", "test") for u in uploads)
            )
            assert failed == [n != 3 for n in range(10)]  # a tombstone is never revived
            assert (await store.get("p", "a3"))["state"] == "deleted"  # type: ignore[index]
            assert (await store.get("p", "a4"))["state"] == "failed"  # type: ignore[index]
            assert (store.asset_writes.requests < 10) == (batch > 1)
        finally:
            await store._client.drop_database(store._assets.database.name)
            await store.close()

    asyncio.run(main())
