"""What the `dupfinder` commands share: exit statuses and a checked connection to the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.store import AssetStore

T = TypeVar("T")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


async def open_store(settings: Settings) -> AssetStore:
    """A store on the configured database, pinged so that an outage is reported at once."""
    from worker.store import AssetStore

    store = AssetStore.from_settings(settings)
    try:
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store


def on_store(settings: Settings, work: Callable[[AssetStore], Awaitable[T]]) -> T:
    """`work`'s result on a freshly opened store, closed afterwards, in an event loop of its own
    (the commands are synchronous). Raises `StoreUnavailable` when the database does not answer.
    """

    async def run() -> T:
        store = await open_store(settings)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())
