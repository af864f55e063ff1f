"""Concurrent writes and look-ups sent as one request (worker.batching), against the
MongoDB-protocol server: one request for many writers or askers, each its own outcome, a failed
request everyone's, and a look-up never answered from another portal's documents."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings
from typing import Any

import pytest
from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.errors import ConnectionFailure

from tests.sources import unanswering_port
from worker.batching import LookupBatcher, WriteBatcher


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


def test_writes_of_counted_writers_wait_only_for_the_writers_still_on_their_way(
    mongo_url: str,
) -> None:
    async def body(collection: Any) -> None:
        batcher = WriteBatcher(collection, max_writes=100, window_s=30.0)

        # A lone upload counted as coming is not held for the 30 s window
        started = time.monotonic()
        with batcher.coming():
            await batcher.write(InsertOne({"portal_id": "p", "asset_id": "lone"}))
        assert time.monotonic() - started < 5

        # Three on their way: the first two writes wait for the third, and all share a request
        async def upload(n: int, hashing_s: float) -> None:
            with batcher.coming():
                await asyncio.sleep(hashing_s)
                await batcher.write(InsertOne({"portal_id": "p", "asset_id": f"a{n}"}))

        started = time.monotonic()
        await asyncio.gather(upload(1, 0.0), upload(2, 0.05), upload(3, 0.3))
        assert 0.3 <= time.monotonic() - started < 5
        assert batcher.requests == 2

        # One that ends without writing (a failure) releases the others at once
        async def fails() -> None:
            with batcher.coming():
                await asyncio.sleep(0.2)

        started = time.monotonic()
        await asyncio.gather(upload(4, 0.0), fails())
        assert 0.2 <= time.monotonic() - started < 5
        assert batcher.requests == 3

    _run(mongo_url, body)


def test_a_batch_does_not_wait_for_the_writers_the_hashing_threads_may_hold(
    mongo_url: str,
) -> None:
    async def body(collection: Any) -> None:
        batcher = WriteBatcher(collection, max_writes=100, window_s=30.0, hashing=2)
        sent_at: dict[int, float] = {}

        async def upload(n: int, hashing_s: float) -> None:
            with batcher.coming():
                await asyncio.sleep(hashing_s)
                await batcher.write(InsertOne({"portal_id": "p", "asset_id": f"a{n}"}))
                sent_at[n] = time.monotonic() - started

        # Five on their way, three written at once: they go without the two still hashing
        # (which would otherwise hold them for the 30 s window or until both had joined); those
        # two, each of which a hashing thread may hold, then go as they come.
        started = time.monotonic()
        await asyncio.gather(*(upload(n, 0.0) for n in range(3)), upload(3, 1.0), upload(4, 1.0))
        assert max(sent_at[n] for n in range(3)) < 0.8
        assert min(sent_at[3], sent_at[4]) >= 1.0
        assert batcher.requests == 3

        # Writers never counted as on their way still wait out the window
        quick = WriteBatcher(collection, max_writes=100, window_s=0.3, hashing=2)
        started = time.monotonic()
        await quick.write(InsertOne({"portal_id": "p", "asset_id": "uncounted"}))
        assert 0.3 <= time.monotonic() - started < 5

    _run(mongo_url, body)


def _unreachable(body: Any) -> Any:
    """`body(collection)` on a client of a database node that never answers."""

    async def main(port: int) -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=300
        )
        try:
            return await body(client["d"]["assets"])
        finally:
            await client.close()

    with unanswering_port() as port:
        return asyncio.run(main(port))


def test_an_unreachable_database_leaves_no_socket_for_a_later_test() -> None:
    """An unclosed socket found by the garbage collector fails the test it is collected in,
    whichever that is; the stand-in for a down node must leave none behind."""

    async def body(collection: Any) -> str:
        try:
            await collection.find_one({})
        except ConnectionFailure:
            return "failed"  # not the error itself: its traceback would hold on to the socket
        return "answered"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        outcomes = [_unreachable(body) for _ in range(8)]
        gc.collect()
    assert outcomes == ["failed"] * 8
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


def test_a_failed_request_fails_every_writer_of_its_batch() -> None:
    async def body(collection: Any) -> list[BaseException | Any]:
        batcher = WriteBatcher(collection, max_writes=10, window_s=0.01)
        return await asyncio.gather(
            *(batcher.write(InsertOne({"n": n})) for n in range(3)), return_exceptions=True
        )

    outcomes = _unreachable(body)
    assert all(isinstance(o, ConnectionFailure) for o in outcomes), outcomes


def test_look_ups_asked_together_share_a_query_per_portal_and_stay_in_their_portal(
    mongo_url: str,
) -> None:
    async def body(collection: Any) -> None:
        await collection.insert_many(
            [{"portal_id": "p", "asset_id": f"a{n}", "state": "hashed"} for n in range(5)]
            + [{"portal_id": "q", "asset_id": "a9", "state": "deleted"}]
        )
        batcher = LookupBatcher(collection, {"_id": 0, "state": 1}, max_keys=100)
        asked = [batcher.ask("p", f"a{n}") for n in range(10)] + [batcher.ask("q", "a1")]
        assert batcher.requests == 0  # nothing is sent until an answer is needed
        assert asked[1] is batcher.ask("p", "a1")  # one question per asset while unsent

        # When one answer is needed, every unsent question goes: one query per portal
        first = await batcher.answer(asked[0])
        rest = await asyncio.gather(*(batcher.answer(a) for a in asked[1:]))
        assert batcher.requests == 2
        assert [first, *rest[:9]] == [{"state": "hashed"}] * 5 + [None] * 5
        # q's a1 does not exist: p's a1 is not q's, and q's a9 is no answer to p's a9
        assert rest[9] is None

        # A question asked after the batch went is sent with the next one
        late = batcher.ask("q", "a9")
        assert await batcher.answer(late) == {"state": "deleted"}
        assert batcher.requests == 3

    _run(mongo_url, body)


def test_a_full_batch_of_look_ups_is_sent_without_waiting_for_an_answer(mongo_url: str) -> None:
    async def body(collection: Any) -> None:
        batcher = LookupBatcher(collection, {"_id": 0}, max_keys=4)
        asked = [batcher.ask("p", f"a{n}") for n in range(4)]
        await asyncio.wait_for(asyncio.gather(*asked), timeout=10)  # sent without answer()
        assert batcher.requests == 1

    _run(mongo_url, body)


def test_a_failed_look_up_fails_every_asker_of_its_query() -> None:
    async def body(collection: Any) -> list[BaseException | Any]:
        batcher = LookupBatcher(collection, {"_id": 0})
        asked = [batcher.ask("p", f"a{n}") for n in range(3)]
        return await asyncio.gather(*(batcher.answer(a) for a in asked), return_exceptions=True)

    outcomes = _unreachable(body)
    assert all(isinstance(o, ConnectionFailure) for o in outcomes), outcomes


def _stored(document: dict[str, Any] | None) -> dict[str, Any]:
    """A stored asset without what differs between two writes of the same content."""
    assert document is not None
    return {
        k: v
        for k, v in document.items()
        if k not in ("_id", "asset_id", "created_at", "updated_at", "hashed_at")
    }


def test_a_first_upload_inserted_is_stored_as_the_upsert_stores_it(mongo_url: str) -> None:
    from datetime import UTC, datetime

    from schemas.messages import AssetUploaded
    from tests.images import encode, photo
    from worker.core.hashing import hash_image, provenance
    from worker.store import AssetStore

    image = hash_image(encode(photo(5)), max_pixels=10**8)

    def upload(asset_id: str) -> AssetUploaded:
        return AssetUploaded(
            portal_id="p",
            asset_id=asset_id,
            source="/x.png",
            title="t",
            tags=["a"],
            uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
        )

    async def main() -> None:
        store = AssetStore.connect(mongo_url, f"batching_{uuid.uuid4().hex[:8]}", timeout_ms=2000)
        await store.ensure_indexes()
        now = datetime(2024, 1, 2, tzinfo=UTC)
        try:
            assert await store.save_hashed(
                upload("ins"), image, provenance(image.decoder), now, first=True
            )
            assert await store.save_hashed(upload("ups"), image, provenance(image.decoder), now)
            assert _stored(await store.get("p", "ins")) == _stored(await store.get("p", "ups"))

            # "first" when another delivery created it meanwhile: upserted after all, and a
            # tombstone is still never revived
            await store.mark_pending(upload("raced"))
            assert await store.save_hashed(
                upload("raced"), image, provenance(image.decoder), now, first=True
            )
            assert (await store.get("p", "raced"))["state"] == "hashed"  # type: ignore[index]
            assert "received_at" not in (await store.get("p", "raced") or {})
            await store.tombstone("p", "gone", via="test", create=True)
            assert not await store.save_hashed(
                upload("gone"), image, provenance(image.decoder), now, first=True
            )
            assert (await store.get("p", "gone"))["state"] == "deleted"  # type: ignore[index]
        finally:
            await store._client.drop_database(store._assets.database.name)
            await store.close()

    asyncio.run(main())


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
