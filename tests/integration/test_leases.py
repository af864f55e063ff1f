"""Leases held by long work: renewed while it runs, released after, taken over only once lost."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from worker.core.errors import StoreUnavailable
from worker.store import AssetStore


def _run(mongo_url: str, scenario: object) -> None:
    async def main() -> None:
        store = AssetStore.connect(mongo_url, f"leases_{uuid.uuid4().hex[:8]}", timeout_ms=2000)
        try:
            await scenario(store)  # type: ignore[operator]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_command_lease_outlives_its_ttl_while_the_command_runs(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        # Given a command that holds the portal's lease for 2.5 times its TTL
        async with store.command_lock("p", "first", ttl_ms=1000):
            await asyncio.sleep(2.5)
            # Then nobody else gets it meanwhile
            with pytest.raises(StoreUnavailable, match="stays busy"):
                async with store.command_lock("p", "second", ttl_ms=1000, wait_s=0.5):
                    pass
        # And once it is released, the next command takes it at once
        async with store.command_lock("p", "second", ttl_ms=1000, wait_s=0.2):
            pass

    _run(mongo_url, scenario)


def test_search_slots_bound_a_portal_and_free_on_exit(mongo_url: str) -> None:
    async def scenario(store: AssetStore) -> None:
        async with (
            store.search_slot("p", "s1", slots=2, ttl_ms=1000) as first,
            store.search_slot("p", "s2", slots=2, ttl_ms=1000) as second,
        ):
            await asyncio.sleep(1.5)  # past the TTL: renewal keeps both held
            async with store.search_slot("p", "s3", slots=2, ttl_ms=1000) as third:
                assert (first, second, third) == (True, True, False)
            async with store.search_slot("q", "s4", slots=2, ttl_ms=1000) as other:
                assert other  # another portal's slots are its own
        async with store.search_slot("p", "s5", slots=1, ttl_ms=1000) as again:
            assert again

    _run(mongo_url, scenario)


def test_a_lease_is_released_even_when_the_driver_turns_its_renewals_cancellation_into_an_error(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen once in CI: the command lock's exit waited for ever on a renewal task that did not
    stop, because a cancelled operation came back as a connection error, which the renewal loop
    takes for a transient fault and retries. Without the fix this test hangs until pytest's
    timeout fails it (the lock's exit swallows the cancellation `wait_for` sends)."""
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.errors import AutoReconnect

    real_update_one = AsyncCollection.update_one

    async def stalling(self: AsyncCollection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name == "locks" and "owner" in query and "$or" not in query:  # a renewal
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise AutoReconnect("connection closed while the operation was cancelled") from None
        return await real_update_one(self, query, *args, **kwargs)

    async def held() -> None:
        async with store_.command_lock("p", "first", ttl_ms=300):
            await asyncio.sleep(0.3)  # the first renewal (after 0.1 s) is stalled now

    store_: AssetStore

    async def scenario(store: AssetStore) -> None:
        nonlocal store_
        store_ = store
        monkeypatch.setattr(AsyncCollection, "update_one", stalling)
        await asyncio.wait_for(held(), 10)
        # and the lease was released: the next command takes it at once
        async with store.command_lock("p", "second", ttl_ms=300, wait_s=0.2):
            pass

    _run(mongo_url, scenario)
