"""The decisions' storage: one document per decision for look-ups, digests for searches, and the
two agreeing after retries, crashes in between, chunk boundaries and other portals' writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from unittest import mock

import pytest

from worker import store as store_module
from worker.store import AssetStore


def _run(mongo_url: str, scenario: Callable[[AssetStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = AssetStore.connect(mongo_url, f"decisions_{uuid.uuid4().hex[:8]}", timeout_ms=2000)
        try:
            await store.ensure_indexes()
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def _sorted(found: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    return sorted(found)


def test_a_retried_command_records_its_decisions_once(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        sets = [["a", "b"], ["c", "d", "e"], ["f"]]  # a set of one says nothing: not recorded
        await store.record_decisions("p", "c1", "kept", sets)
        await store.record_decisions("p", "c1", "kept", sets)

        assert _sorted(await store.decisions("p")) == [
            ("kept", ["a", "b"]),
            ("kept", ["c", "d", "e"]),
        ]
        assert await store._decisions.count_documents({"portal_id": "p"}) == 2

    _run(mongo_url, scenario)


def test_a_crash_between_a_decision_and_its_digest_is_mended_by_the_retry(
    mongo_url: str,
) -> None:
    async def scenario(store: AssetStore) -> None:
        crash = RuntimeError("crash")
        with (
            mock.patch.object(store, "_rebuild_digests", side_effect=crash),
            pytest.raises(RuntimeError),
        ):
            await store.record_decisions("p", "c1", "distinct", [["a", "b"]])
        assert await store.decisions("p") == []  # stored, but not yet where searches read

        await store.record_decisions("p", "c1", "distinct", [["a", "b"]])  # the retry

        assert await store.decisions("p") == [("distinct", ["a", "b"])]

    _run(mongo_url, scenario)


def test_forgetting_survives_a_crash_before_the_decisions_are_deleted(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        await store.record_decisions("p", "c1", "kept", [["a", "b"], ["c", "d"]])
        real_delete = store._decisions.delete_many

        async def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("crash")

        with (
            mock.patch.object(store._decisions, "delete_many", side_effect=crash),
            pytest.raises(RuntimeError),
        ):
            await store.forget_decisions("p", ["a"])
        # Searches already read it as forgotten, and the retry finishes the work
        assert await store.decisions("p") == [("kept", ["c", "d"])]
        assert store._decisions.delete_many == real_delete
        assert await store.forget_decisions("p", ["a"]) == 1
        assert await store.forget_decisions("p", ["a"]) == 0
        assert await store._decisions.count_documents({"portal_id": "p"}) == 1

    _run(mongo_url, scenario)


def test_decisions_fill_chunks_and_forgetting_rewrites_only_theirs(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        with mock.patch.object(store_module, "DIGEST_DECISIONS", 3):
            sets = [[f"x{n}", f"y{n}"] for n in range(8)]
            await store.record_decisions("p", "bulk", "distinct", sets[:5])
            await store.record_decisions("p", "more", "distinct", sets[5:])
        chunks = [d async for d in store._digests.find({"portal_id": "p"}).sort("chunk", 1)]
        assert [c["decisions"] for c in chunks] == [3, 3, 2]
        assert len(await store.decisions("p")) == 8

        assert await store.forget_decisions("p", ["x1", "y6"]) == 2

        left = await store.decisions("p")
        assert _sorted(left) == [
            ("distinct", s) for s in sorted(sets) if s not in (sets[1], sets[6])
        ]

    _run(mongo_url, scenario)


def test_one_portals_decisions_never_reach_anothers(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        await store.record_decisions("p", "c1", "distinct", [["a", "b"]])
        await store.record_decisions("q", "c1", "kept", [["a", "b"]])

        assert await store.forget_decisions("q", ["a"]) == 1
        await store.leave_decisions("q", ["b"])

        assert await store.decisions("p") == [("distinct", ["a", "b"])]
        assert await store.distinct_from("p", "a") == {"b"}
        assert await store.decisions("q") == []
        assert await store.distinct_from("q", "a") == set()

    _run(mongo_url, scenario)


def test_a_deleted_asset_leaves_its_decisions(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        await store.record_decisions("p", "c1", "kept", [["a", "b", "c"], ["a", "d"]])
        await store.leave_decisions("p", ["a"])
        await store.leave_decisions("p", ["a"])  # a redelivered removal

        left = {d["decision_id"]: d["asset_ids"] async for d in store._decisions.find({})}
        assert left == {"c1/0": ["b", "c"]}  # c1/1 named one asset only and went

    _run(mongo_url, scenario)
