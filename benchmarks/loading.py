"""Loading a portal's hashes for a search: documents per second from the MongoDB-protocol server.

    python -m benchmarks.loading [--n 100000] [--url mongodb://...]

Inserts N hashed assets for one portal (once; reused while the database lives), then times
`AssetStore.candidates`, which streams only the projected fields (asset id, hash, pixels,
dates; then with the verified matcher's hashes, about 140 bytes more a document) in
batches into NumPy columns without keeping per-asset documents. Without --url it starts
SecantusDB in-process, as the tests do; pass --url for a real mongod.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from schemas.messages import Scope
from worker.store import AssetStore


async def seed(assets: Any, portal: str, n: int, have: int = 0) -> None:
    """Insert hashed assets `have` to `n` of `portal` straight into the collection, with random
    hashes (so few pairs match) and every field a search reads (hash version 3 documents)."""
    rng = np.random.default_rng(0)
    hashes = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    base = datetime(2020, 1, 1, tzinfo=UTC)
    for lo in range(have, n, 5000):
        await assets.insert_many(
            [
                {
                    "portal_id": portal,
                    "asset_id": f"a{i}",
                    "state": "hashed",
                    "phash_i64": int(hashes[i]),
                    "phash": f"{int(hashes[i]) & (2**64 - 1):016x}",
                    "pixels": 12_000_000,
                    "width": 4000,
                    "height": 3000,
                    "title": f"asset {i}",
                    "description": "",
                    "tags": [],
                    "uploaded_at": base + timedelta(seconds=i),
                    "variants": rng.bytes(32),
                    "centre_i64": int(hashes[i - 1]),
                    "crops": rng.bytes(72),
                    "signature": rng.bytes(1024),
                    "low_detail": False,
                    "sha256": f"{i:064x}",
                    "pixels_sha256": None,
                }
                for i in range(lo, min(n, lo + 5000))
            ]
        )


async def seed_portal(url: str, portal: str, n: int) -> None:
    """A server's `dupfinder` database with the worker's indexes and `portal`'s N hashed assets
    (`seed`), as the end-to-end benchmarks' worker finds it."""
    store = AssetStore.connect(url, "dupfinder", timeout_ms=5000)
    await store.ensure_indexes()
    await seed(store._assets, portal, n)  # straight into the collection
    await store.close()


async def measure(url: str, n: int, rounds: int) -> None:
    store = AssetStore.connect(url, "dupfinder_bench", timeout_ms=5000)
    await store.ensure_indexes()
    assets = store._assets  # the benchmark seeds the collection directly
    portal = f"bench-{n}"
    have = await assets.count_documents({"portal_id": portal})
    if have < n:
        start = time.perf_counter()
        await seed(assets, portal, n, have)
        print(f"seeded {n - have:,} assets in {time.perf_counter() - start:.1f} s")
    for rule in ("phash", "verified"):
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            # As a search reads them: a verified search reads signatures later, for its
            # candidates only.
            candidates = await store.candidates(
                portal,
                Scope(),
                with_titles=False,
                with_prints=rule == "verified",
                with_signatures=False,
            )
            elapsed = time.perf_counter() - start
            assert len(candidates.asset_ids) == n
            best = max(best, n / elapsed)
        print(f"loaded {n:,} assets' {rule} columns: {best:,.0f} documents/s (best of {rounds})")
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--url", help="a MongoDB URL; default: SecantusDB in this process")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.url:
        print(f"server: {args.url}")
        asyncio.run(measure(args.url, args.n, args.rounds))
        return
    from secantus import SecantusDBServer

    with tempfile.TemporaryDirectory() as folder:
        server = SecantusDBServer(port=0, storage_path=folder)
        server.start()
        try:
            print("server: SecantusDB (in-process, WiredTiger)")
            asyncio.run(measure(server.uri, args.n, args.rounds))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
