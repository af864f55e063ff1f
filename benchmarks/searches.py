"""A `find-duplicates` search as the portal times it, from publish to its last page, with the
worker's column cache and without it.

    python -m benchmarks.searches [--n 100000 1000000] [--rounds 3] [--changed 1000]

For each N: a SecantusDB server of its own holds a portal of N hashed assets (seeded straight
into the collection, as `benchmarks.loading` does: random hashes, so few sets) and a
`dupfinder worker` process (two search threads on this machine) answers full-portal `verified`
searches:
- without the cache (`DUPFINDER_SEARCH_CACHE_MB=0`, the baseline: every search reads every
  asset's columns from the database), once;
- with it (the default): the first search (the cache is filled), ROUNDS searches of the
  unchanged portal, then ROUNDS times CHANGED assets written again (a third renamed, a third
  pinned, a third deleted; stamped as the worker stamps them) and a search after each batch;
  then the peak resident memory of the worker process, with the cache and without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np

from benchmarks import services
from benchmarks.loading import seed_portal
from schemas.messages import FindDuplicates
from schemas.publisher import PortalPublisher
from worker.store import AssetStore

PORTAL = "bench"


async def _change(url: str, ids: list[str]) -> None:
    """Write `ids` again as the worker would: a third renamed, a third pinned, a third deleted."""
    store = AssetStore.connect(url, "dupfinder", timeout_ms=5000)
    assets = store._assets
    now = datetime.now(UTC)
    third = len(ids) // 3
    renamed, pinned, deleted = ids[:third], ids[third : 2 * third], ids[2 * third :]
    for chunk, update in (
        (renamed, {"title": f"renamed {now.isoformat()}"}),
        (pinned, {"pinned_at": now}),
        (deleted, {"state": "deleted"}),
    ):
        await assets.update_many(
            {"portal_id": PORTAL, "asset_id": {"$in": chunk}},
            {"$set": {**update, "updated_at": now}},
        )
    await store.close()


def search(portal: services.Portal) -> float:
    """Seconds from publishing a full-portal `verified` search to receiving its last page.

    Each request goes out on a connection of its own: a search of a million assets outlasts
    RabbitMQ's heartbeat timeout, and an idle publishing connection is closed meanwhile.
    """
    request = FindDuplicates(request_id=uuid.uuid4().hex, portal_id=PORTAL, match="verified")

    def last_page(kind: str, event: dict[str, Any]) -> bool:
        if kind == "request.failed":
            raise RuntimeError(f"refused: {event}")
        return event.get("request_id") == request.request_id and event["page"] == event["pages"]

    publisher = PortalPublisher(services.AMQP_URL)  # connected before the clock starts
    started = time.perf_counter()
    with contextlib.closing(publisher):
        publisher.publish(request)  # confirmed by the broker before it returns
    portal.events(last_page, 3600)
    return time.perf_counter() - started


def run(n: int, rounds: int, changed: int) -> None:
    """Prints each figure as soon as it is measured: a run at a million assets takes an hour."""
    with services.database() as (url, _server):
        started = time.perf_counter()
        asyncio.run(seed_portal(url, PORTAL, n))
        print(f"{n:,} assets seeded in {time.perf_counter() - started:.0f} s", flush=True)
        print(f"  full-portal verified search of {n:,} assets, publish to last page:")
        with services.Portal.open(f"{PORTAL}.#") as portal:
            off = {"DUPFINDER_SEARCH_CACHE_MB": "0"}
            with services.worker(url, processes=1, env=off) as main:
                uncached = search(portal)
                uncached_peak = _peak(main.pid)
            _line("without the cache (baseline), every search", f"{uncached:8.2f} s")
            with services.worker(url, processes=1) as main:
                _line("with it: the first search (fills the cache)", f"{search(portal):8.2f} s")
                unchanged = [search(portal) for _ in range(rounds)]
                _times("with it: the portal unchanged", unchanged, uncached)
                rng = np.random.default_rng(5)
                live = np.arange(n)
                after = []
                for _ in range(rounds):
                    picked = rng.choice(len(live), size=changed, replace=False)
                    asyncio.run(_change(url, [f"a{i}" for i in live[picked].tolist()]))
                    live = np.delete(live, picked[2 * (changed // 3) :])  # the deleted third
                    after.append(search(portal))
                _times(f"with it: after {changed:,} assets changed", after, uncached)
                cached_peak = _peak(main.pid)
            print(
                f"  peak memory of the worker process: {uncached_peak / 2**20:,.0f} MiB without "
                f"the cache, {cached_peak / 2**20:,.0f} MiB with it "
                f"({(cached_peak - uncached_peak) / n:,.0f} bytes an asset more)",
                flush=True,
            )


def _line(label: str, figures: str) -> None:
    print(f"  {label:<48} {figures}", flush=True)


def _times(label: str, times: list[float], baseline: float) -> None:
    median = statistics.median(times)
    _line(
        label,
        f"{median:8.2f} s median, {max(times):.2f} s max of {len(times)} "
        f"({baseline / median:.1f}x the baseline's speed)",
    )


def _peak(pid: int) -> int:
    """The peak resident memory of a worker's (one) Dramatiq process."""
    (process,) = services.children(pid)
    return services.resident_bytes(process, "VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed", type=int, default=1000)
    args = parser.parse_args()
    for n in args.n:
        run(n, args.rounds, args.changed)


if __name__ == "__main__":
    main()
