"""Leases held by long work: renewed while it runs, released after, taken over only once lost."""

from __future__ import annotations

import asyncio
import uuid

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
