"""One portal's backlog of heavy searches against another portal's light one.

    python -m benchmarks.fairness [--heavy-assets 10000] [--backlog 40]

Starts SecantusDB and a `dupfinder worker` (one process, the shipped 8 threads), seeds a heavy
portal with HEAVY_ASSETS hashed assets and a small portal with 50, and times the small
portal's `find-duplicates` (publish to last page) alone, then published right behind BACKLOG
full-portal searches of the heavy portal. It does so with `DUPFINDER_SEARCHES_PER_PORTAL=0` (no
cap: the behaviour before the cap, the baseline), then with caps of 1 and 2.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from benchmarks import services
from benchmarks.loading import seed
from schemas.messages import FindDuplicates
from worker.store import AssetStore

SMALL_ASSETS = 50


async def _seed(url: str, heavy: int) -> None:
    store = AssetStore.connect(url, "dupfinder", timeout_ms=5000)
    await store.ensure_indexes()
    await seed(store._assets, "heavy", heavy)  # the benchmark seeds the collection directly
    await seed(store._assets, "small", SMALL_ASSETS)
    await store.close()


class Answers:
    """When each request's last page arrived, whichever request the caller waits for."""

    def __init__(self, portal: services.Portal) -> None:
        self.portal = portal
        self.at: dict[str, float] = {}

    def send(self, portal_id: str, requests: int) -> list[str]:
        ids = [f"{portal_id}-{uuid.uuid4().hex[:8]}" for _ in range(requests)]
        for request_id in ids:
            self.portal.publisher.publish(
                FindDuplicates(request_id=request_id, portal_id=portal_id)
            )
        return ids

    def wait(self, ids: list[str]) -> float:
        """Until every one of `ids` is answered; the time the last one was."""

        def until(routing_key: str, event: dict[str, Any]) -> bool:
            if routing_key == "request.failed":
                raise RuntimeError(f"search failed: {event}")
            if routing_key == "duplicates.found" and event.get("page") == event.get("pages"):
                self.at[event["request_id"]] = time.monotonic()
            return all(i in self.at for i in ids)

        if not all(i in self.at for i in ids):
            self.portal.events(until, 1800)
        return max(self.at[i] for i in ids)


def _behind(url: str, backlog: int, cap: int) -> tuple[float, float, float]:
    """(small alone, small behind the backlog, the whole backlog) in seconds, with `cap`."""
    env = {"DUPFINDER_SEARCHES_PER_PORTAL": str(cap)}
    with services.worker(url, processes=1, env=env), services.Portal.open() as portal:
        answers = Answers(portal)
        answers.wait(answers.send("small", 1))  # warm-up: boot, compiled loops, indexes
        alone = []
        for _ in range(3):
            started = time.monotonic()
            alone.append(answers.wait(answers.send("small", 1)) - started)
        started = time.monotonic()
        heavy = answers.send("heavy", backlog)
        behind = answers.wait(answers.send("small", 1)) - started
        return min(alone), behind, answers.wait(heavy) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heavy-assets", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=40)
    args = parser.parse_args()
    with services.database() as (url, _server):
        asyncio.run(_seed(url, args.heavy_assets))
        print(
            f"a small portal ({SMALL_ASSETS} assets) searches behind {args.backlog} searches of a "
            f"portal of {args.heavy_assets:,} assets (verified rule, one worker process)"
        )
        print(f"{'':<28} {'alone':>8} {'behind the backlog':>19} {'backlog done':>13}")
        for label, cap in (
            ("no cap (baseline)", 0),
            ("1 search per portal", 1),
            ("2 searches per portal", 2),
        ):
            alone, behind, backlog = _behind(url, args.backlog, cap)
            print(f"{label:<28} {alone:>7.2f}s {behind:>18.2f}s {backlog:>12.1f}s")


if __name__ == "__main__":
    main()
