"""What review decisions cost a search, and how fast a decision of 1 000 assets is answered.

    python -m benchmarks.decisions [--n 1000000] [--decisions 100000] [--store-n 200000]
                                   [--skip-core] [--skip-service]

Core (in this process, one thread): a full-portal `verified` search over N assets as the worker
runs it (candidate pairs, signatures for the candidates, confirmation, sets, original reasons,
the keep review, the asset bank's order), without decisions (the baseline) and with DECISIONS
decisions from their stored form (asset id strings), the variants taking turns (the machine's
speed wanders) and each keeping its best round: half of the planted copy pairs marked
distinct, a quarter kept, the rest over random assets of 2-4 ids, distinct and kept alike.

Service (a SecantusDB server and a `dupfinder worker` process on the local RabbitMQ): a portal of
STORE_N hashed assets, seeded straight into the collection; a full-portal `verified` search from
publish to its last page, before and after DECISIONS decisions are stored (the decisions' read
is the part that does not shrink with the portal: this is the harder ratio of the two); then
`keep-set` and `mark-distinct` commands of 1 000 ids each from publish to answer, beside a
`make-original` (one id) as the baseline and a `keep-set` of two.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from benchmarks import services
from benchmarks.loading import seed_portal
from benchmarks.search import corpus, fingerprints
from schemas.messages import FindDuplicates, KeepSet, MakeOriginal, MarkDistinct, Payload, Sort
from worker.core import decisions, grouping, matching, pages
from worker.core.neighbours import compile_ahead
from worker.store import AssetStore

PORTAL = "bench"


def planted_pairs(n: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The (original, copy) positions `benchmarks.search.corpus(n, seed=1)` planted."""
    replan = np.random.default_rng(1)
    replan.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    originals = replan.choice(n, size=n // 100, replace=False)
    copies = replan.choice(
        np.setdiff1d(np.arange(n), originals), size=len(originals), replace=False
    )
    return originals, copies


def decision_corpus(
    ids: list[str], count: int, seed: int, *, planted: bool = True
) -> list[tuple[str, list[str]]]:
    """`count` decisions as stored: planted pairs first (half distinct, a quarter kept) unless
    not `planted`, then random ones of 2-4 assets."""
    rng = np.random.default_rng(seed)
    originals, copies = planted_pairs(len(ids)) if planted else (np.empty(0), np.empty(0))
    found: list[tuple[str, list[str]]] = []
    half = len(originals) // 2
    for k, (o, c) in enumerate(zip(originals.tolist(), copies.tolist(), strict=True)):
        if k < half:
            found.append((decisions.DISTINCT, [ids[o], ids[c]]))
        elif k < half + half // 2:
            found.append((decisions.KEPT, [ids[o], ids[c]]))
    while len(found) < count:
        chosen = rng.choice(len(ids), size=int(rng.integers(2, 5)), replace=False)
        kind = decisions.KINDS[len(found) % 2]
        found.append((kind, [ids[i] for i in chosen.tolist()]))
    return found[:count]


def best(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def core(n: int, count: int, rounds: int) -> None:
    compile_ahead()
    hashes = corpus(n, seed=1)
    stored, _planted = fingerprints(hashes, seed=3)
    ids = [f"a{i}" for i in range(n)]
    bare = dataclasses.replace(
        stored, signatures=stored.signatures[:0], signature_rows=np.full(n, -1, np.intp)
    )
    candidates = grouping.Candidates(
        asset_ids=ids,
        phashes=hashes,
        pixels=np.full(n, 12_000_000, np.int64),
        uploaded_at_us=np.arange(n, dtype=np.int64),
        pinned_at_us=np.zeros(n, np.int64),
        titles=[],
        prints=bare,
    )
    order = grouping.original_order(
        candidates.pinned_at_us, candidates.pixels, candidates.uploaded_at_us, ids
    )
    stored_decisions = decision_corpus(ids, count, seed=5)

    def search(found: list[tuple[str, list[str]]], steps: dict[str, float]) -> list[grouping.Group]:
        """The worker's `_search`, from its columns to the ordered sets (pages aside); what
        only decisions add is timed into `steps`: placing them, keeping pairs apart (before
        and while sets form) and the keep review."""

        def step(name: str, fn: Callable[[], Any]) -> Any:
            started = time.perf_counter()
            result = fn()
            steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
            return result

        pairs = matching.candidate_pairs(bare)
        among = matching.named_assets(pairs)
        decided = (
            step("placing", lambda: decisions.decided(ids, found, among))
            if found
            else decisions.NONE
        )
        apart = None if decided.distinct.count == 0 else decided
        if apart is not None:
            pairs = step("apart", lambda: grouping.without_apart(apart, *pairs))
        named = matching.named_assets(pairs)
        read = [stored.signatures[i].tobytes() for i in named.tolist()]
        prints = matching.with_signatures(bare, named, read)
        scope = dataclasses.replace(candidates, prints=prints)
        sets = step(
            "forming",
            lambda: grouping.find_sets(scope, order, "verified", 0, pairs=pairs, apart=apart),
        )
        sets = grouping.with_reasons(candidates, sets)
        if found:
            sets = step("review", lambda: decisions.review(sets, decided, include_kept=False))
        return pages.bank_order(candidates, sets, Sort())

    unrelated = decision_corpus(ids, count, seed=6, planted=False)
    search(unrelated, {})  # warm-up: first touches of the columns, compiled loops
    variants = {
        "no decisions (baseline)": [],
        f"{count:,} decisions on planted copies and others": stored_decisions,
        f"{count:,} decisions on other assets only": unrelated,
    }
    # The machine's speed wanders within a minute (the same search took 13.3 to 16.6 s): the
    # variants take turns and each keeps its best round, and what only decisions add is timed
    # on its own, which the wandering hardly touches.
    times: dict[str, list[float]] = {label: [] for label in variants}
    own: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    sets: dict[str, int] = {}
    for _ in range(rounds):
        for label, found in variants.items():
            steps: dict[str, float] = {}
            started = time.perf_counter()
            sets[label] = len(search(found, steps))
            times[label].append(time.perf_counter() - started)
            own[label].append(steps)
    baseline = "no decisions (baseline)"
    plain_s = min(times[baseline])
    plain_forming = min(s["forming"] for s in own[baseline])
    print(f"core: full-portal verified search over {n:,} assets, one thread, best of {rounds}")
    print(f"  {'':<48} {'search':>9}   {'sets':>6}   decisions' own steps")
    for label, spent in times.items():
        line = f"  {label:<48} {min(spent):7.2f} s   {sets[label]:>6,}"
        if label != baseline:
            # Forming sets with apart checks, beyond forming them from the same pairs without.
            parts = {
                name: min(s.get(name, 0.0) for s in own[label])
                for name in ("placing", "apart", "review")
            }
            forming = min(s["forming"] for s in own[label]) - plain_forming
            added = sum(parts.values()) + max(forming, 0.0)
            line += (
                f"   {added:.2f} s = {added / plain_s * 100:.1f} % of the baseline (placing "
                f"{parts['placing']:.2f}, pairs apart {parts['apart']:.2f}, review "
                f"{parts['review']:.2f}, forming {forming:+.2f}); whole search "
                f"{(min(spent) / plain_s - 1) * 100:+.1f} %"
            )
        print(line)


async def _store_decisions(url: str, n: int, count: int) -> float:
    """Store `count` decisions over the seeded assets; the time one full read of them takes."""
    store = AssetStore.connect(url, "dupfinder", timeout_ms=5000)
    found = decision_corpus([f"a{i}" for i in range(n)], count, seed=7)
    for kind in decisions.KINDS:
        sets = [ids for k, ids in found if k == kind]
        for start in range(0, len(sets), 1000):
            await store.record_decisions(
                PORTAL, f"seed-{kind}-{start}", kind, sets[start : start + 1000]
            )
    started = time.perf_counter()
    read = await store.decisions(PORTAL)
    elapsed = time.perf_counter() - started
    assert len(read) == count, len(read)
    await store.close()
    return elapsed


class Timer:
    """Publish a payload, and time until its answer (the last page, for a search)."""

    def __init__(self, portal: services.Portal) -> None:
        self.portal = portal

    def answer(
        self, payload: Payload, key: str, done: Callable[[str, dict[str, Any]], bool]
    ) -> float:
        started = time.perf_counter()
        self.portal.publisher.publish(payload)

        def until(kind: str, event: dict[str, Any]) -> bool:
            if kind in ("request.failed", "command.rejected"):
                raise RuntimeError(f"refused: {event}")
            return event.get(key) == getattr(payload, key) and done(kind, event)

        self.portal.events(until, 1800)
        return time.perf_counter() - started

    def search(self) -> float:
        request = FindDuplicates(request_id=uuid.uuid4().hex, portal_id=PORTAL, match="verified")
        return self.answer(request, "request_id", lambda k, e: e["page"] == e["pages"])

    def command(self, payload: Payload) -> float:
        return self.answer(payload, "command_id", lambda k, e: True)


def service(n: int, count: int, rounds: int) -> None:
    with services.database() as (url, _server):
        started = time.perf_counter()
        asyncio.run(seed_portal(url, PORTAL, n))
        print(f"service: seeded {n:,} assets in {time.perf_counter() - started:.0f} s")
        with services.worker(url, processes=1), services.Portal.open(f"{PORTAL}.#") as portal:
            timer = Timer(portal)
            timer.search()  # warm-up: boot, compiled loops, caches
            plain = min(timer.search() for _ in range(rounds))
            read_s = asyncio.run(_store_decisions(url, n, count))
            decided = min(timer.search() for _ in range(rounds))
            print(
                f"  full-portal verified search, publish to last page, best of {rounds}:\n"
                f"  no decisions (baseline)      {plain:7.2f} s\n"
                f"  {count:,} decisions        {decided:7.2f} s   "
                f"{(decided / plain - 1) * 100:+.1f} % (one read of them alone: {read_s:.2f} s)"
            )
            ids = [f"a{i}" for i in range(n)]
            rng = np.random.default_rng(11)

            def thousand() -> list[str]:
                return [ids[i] for i in rng.choice(n, size=1000, replace=False).tolist()]

            def cid() -> str:
                return uuid.uuid4().hex

            def timed(make: Callable[[], Payload]) -> list[float]:
                return [timer.command(make()) for _ in range(rounds)]

            pin = timed(lambda: MakeOriginal(command_id=cid(), portal_id=PORTAL, asset_id=ids[0]))
            pair = timed(lambda: KeepSet(command_id=cid(), portal_id=PORTAL, asset_ids=ids[1:3]))
            keep = timed(lambda: KeepSet(command_id=cid(), portal_id=PORTAL, asset_ids=thousand()))
            apart = timed(
                lambda: MarkDistinct(command_id=cid(), portal_id=PORTAL, asset_ids=thousand())
            )
            print(f"  commands, publish to answer, median (max) of {rounds}:")
            for label, times in (
                ("make-original, 1 id (baseline)", pin),
                ("keep-set, 2 ids", pair),
                ("keep-set, 1 000 ids", keep),
                ("mark-distinct, 1 000 ids", apart),
            ):
                median_ms, max_ms = statistics.median(times) * 1000, max(times) * 1000
                print(f"  {label:<32} {median_ms:7.0f} ms ({max_ms:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="assets of the core search")
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--store-n", type=int, default=200_000, help="assets of the portal")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args()
    if not args.skip_core:
        core(args.n, args.decisions, args.rounds)
    if not args.skip_service:
        service(args.store_n, args.decisions, args.rounds)


if __name__ == "__main__":
    main()
