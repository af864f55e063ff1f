"""What one write of an upload costs the database server, alone and in bulk.

    python -m benchmarks.writes [--n 1500] [--url mongodb://...]

Starts its own SecantusDB server (unless `--url` names a server), creates the `assets` indexes
the worker creates, and measures the server's CPU per operation for the writes an upload makes
(the pending insert, the look-up, the upsert of the hash) and for the upsert sent in bulks of 4
and 16, the insert of a first upload's hashed document and the look-ups sent 16 at a time, as
`worker.batching` sends them. A bulk row's baseline is the last single row of its kind above
it (the upsert alone, or the projected look-up of a hashed asset). Documents carry a
fingerprint-sized binary field, as hashed assets do.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import pymongo
from pymongo import InsertOne, UpdateOne

from benchmarks import services
from benchmarks.e2e import _cpu_seconds
from worker.store import LIVE, UPLOAD_STATE_FIELDS, AssetStore


def _document(n: int, prefix: str = "a") -> dict[str, Any]:
    return {
        "portal_id": "bench",
        "asset_id": f"{prefix}{n}",
        "state": "pending",
        "title": "harbour at dusk",
        "tags": ["sea", "boat"],
        "source": "/assets/bench/photo.jpg",
    }


def _key(n: int) -> dict[str, str]:
    return {"portal_id": "bench", "asset_id": f"a{n}"}


def _hashed_document(n: int, prefix: str) -> dict[str, Any]:
    return {
        **_document(n, prefix),
        "state": "hashed",
        "phash": "8f3a" * 4,
        "width": 4000,
        "height": 3000,
        "prints": b"\x01" * 1200,
    }


def _hashed(n: int, prefix: str) -> UpdateOne:
    return UpdateOne(
        {"portal_id": "bench", "asset_id": f"{prefix}{n}", "state": {"$in": LIVE}},
        {"$set": _hashed_document(n, prefix)},
        upsert=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1500, help="operations per row")
    parser.add_argument("--url", help="a MongoDB server to measure instead (its CPU is not read)")
    args = parser.parse_args()
    if args.url:
        run(args.url, None, args.n)
        return
    with services.database() as (url, server):
        run(url, server.pid, args.n)


def run(url: str, pid: int | None, n: int) -> None:
    async def indexes() -> None:
        store = AssetStore.connect(url, "bench_writes", timeout_ms=5000)
        await store.ensure_indexes()
        await store.close()

    asyncio.run(indexes())
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, w="majority")
    assets = client["bench_writes"]["assets"]
    rows: list[tuple[str, Callable[[int], object], int]] = [
        ("insert pending", lambda i: assets.insert_one(_document(i)), 1),
        (
            "look up by asset",
            lambda i: assets.find_one({"portal_id": "bench", "asset_id": f"a{i}"}),
            1,
        ),
        ("upsert the hash, alone", lambda i: assets.bulk_write([_hashed(i, "s")]), 1),
        (
            "look up a hashed asset, whole",
            lambda i: assets.find_one({"portal_id": "bench", "asset_id": f"s{i}"}, {"_id": 0}),
            1,
        ),
        (
            "look up a hashed asset, state",
            lambda i: assets.find_one(
                {"portal_id": "bench", "asset_id": f"s{i}"}, UPLOAD_STATE_FIELDS
            ),
            1,
        ),
        (
            "upsert the hash, bulk of 4",
            lambda i: assets.bulk_write([_hashed(4 * i + k, "q") for k in range(4)], ordered=False),
            4,
        ),
        (
            "upsert the hash, bulk of 16",
            lambda i: assets.bulk_write(
                [_hashed(16 * i + k, "x") for k in range(16)], ordered=False
            ),
            16,
        ),
        (
            "insert the hashed, bulk of 16",
            lambda i: assets.bulk_write(
                [InsertOne(_hashed_document(16 * i + k, "h")) for k in range(16)], ordered=False
            ),
            16,
        ),
        (
            "look up 16 in one find",
            lambda i: list(
                assets.find(
                    {
                        "portal_id": "bench",
                        "asset_id": {"$in": [f"h{16 * i + k}" for k in range(16)]},
                    },
                    UPLOAD_STATE_FIELDS,
                )
            ),
            16,
        ),
    ]
    print(f"\n== one upload's writes, {n} operations a row ({'SecantusDB' if pid else url})")
    print(f"{'operation':<30} {'server CPU/op':>14} {'wall/op':>10}")
    alone: dict[bool, float] = {}  # the last single write's and look-up's CPU
    for label, operation, per_call in rows:
        calls = max(1, n // per_call)
        cpu_before = _cpu_seconds(pid) if pid else 0.0
        started = time.perf_counter()
        for i in range(calls):
            operation(i)
        wall = (time.perf_counter() - started) / (calls * per_call)
        cpu = ((_cpu_seconds(pid) - cpu_before) / (calls * per_call)) if pid else float("nan")
        if per_call == 1:
            alone[label.startswith("look up")] = cpu
        baseline = alone.get(label.startswith("look up"), 0.0)
        ratio = f"  {baseline / cpu:.2f}x less than alone" if per_call > 1 and pid else ""
        print(f"{label:<30} {cpu * 1000:>11.2f} ms {wall * 1000:>7.2f} ms{ratio}")
    client.drop_database("bench_writes")
    client.close()


if __name__ == "__main__":
    main()
