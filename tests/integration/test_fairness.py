"""One portal's searches cannot take the threads another portal's search needs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from schemas.messages import FindDuplicates
from tests.harness import Harness
from worker.store import AssetStore


def test_a_portal_over_its_search_slots_waits_its_turn_while_others_are_served(
    harness: Harness, portal: str
) -> None:
    # Given a portal whose one search slot is taken (as by a long search elsewhere) for 3 s
    busy, other = portal, f"{portal}-other"
    taken, hold_s = threading.Event(), 3.0

    def hold_the_slot() -> None:
        async def hold() -> None:
            store = AssetStore.connect(harness.mongo_url, harness.database, timeout_ms=2000)
            try:
                async with store.search_slot(busy, "elsewhere", slots=1, ttl_ms=60_000) as ok:
                    assert ok
                    taken.set()
                    await asyncio.sleep(hold_s)
            finally:
                await store.close()

        asyncio.run(hold())

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    assert taken.wait(10)
    started = time.monotonic()

    # When both portals search
    harness.send(FindDuplicates(request_id=f"r-{uuid.uuid4().hex[:6]}", portal_id=busy))
    harness.send(FindDuplicates(request_id="r-other", portal_id=other))

    # Then the other portal is answered at once, and the busy one once its slot is free
    harness.wait_for(other, "duplicates.found", timeout=10)
    other_s = time.monotonic() - started
    harness.wait_for(busy, "duplicates.found", timeout=20)
    busy_s = time.monotonic() - started
    holder.join()
    assert other_s < 2.0
    assert busy_s >= hold_s - 0.2
    assert harness.events(busy, "request.failed") == []
