"""The search core at portal scale: all pairs within a radius, and duplicate sets.

    python -m benchmarks.search [--n 100000] [--radius 8] [--baselines faiss,brute,bktree]
                                [--verified] [--threads 1]

Hashes: pHashes of the sample photos and their copies, plus balanced random 64-bit hashes (how
unrelated photos' pHashes spread), with planted near copies 0-8 bits from an original. Prints the
time of dupfinder's multi-index search and of each baseline in the same run, checks that no pair
within the radius is missed (against brute force on a sample of queries), and the memory the
core holds per asset. One core by default (BLAS/OpenMP threads pinned to 1); `--threads 2`
gives dupfinder's probes and faiss's range search two threads each.

`--verified` also times the verified matcher over the same assets: every asset gets a full
fingerprint (centre hash, turn variants and a photo-like 32 x 32 signature); planted copies get
their original's signature with noise, and some are planted as mirrors.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from numpy.typing import NDArray

from worker.core.fingerprint import CROP_COUNT
from worker.core.grouping import Group, form_sets, form_verified_sets, hamming, original_order
from worker.core.matching import Fingerprints, candidate_pairs, named_assets, with_signatures
from worker.core.neighbours import compile_ahead, pairs_within


def corpus(n: int, seed: int) -> NDArray[np.uint64]:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    try:
        from benchmarks.corpus import encoded, photos
        from worker.core.hashing import hash_image

        real = [
            int(hash_image(encoded(p.image, "PNG"), max_pixels=10**9).phash, 16) for p in photos()
        ]
        hashes[: len(real)] = np.array(real, dtype=np.uint64)
    except SystemExit:  # no sample photos installed: random hashes only
        pass
    # 1 % of assets get a near copy 0-8 bits away
    originals = rng.choice(n, size=n // 100, replace=False)
    copies = rng.choice(np.setdiff1d(np.arange(n), originals), size=len(originals), replace=False)
    for k, (o, c) in enumerate(zip(originals, copies, strict=True)):
        bits = rng.choice(64, size=k % 9, replace=False)
        hashes[c] = hashes[o] ^ np.uint64(sum(1 << int(b) for b in bits))
    return hashes


def fingerprints(hashes: NDArray[np.uint64], seed: int) -> tuple[Fingerprints, int]:
    """Fingerprints for `hashes` as `corpus` planted them, and how many copies were planted.

    Unrelated signatures are smooth random fields (unrelated photos correlate like these, spread
    around 0); a planted copy's signature is its original's plus noise, and every tenth planted
    copy is a mirror (its pHash is the original's mirror variant).
    """
    n = len(hashes)
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    signatures = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).reshape(n, 1024)
    signatures = signatures + rng.integers(0, 8, signatures.shape, dtype=np.uint8)
    variants = rng.integers(0, 2**64 - 1, (n, 4), dtype=np.uint64, endpoint=True)
    centres = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    crops = rng.integers(0, 2**64 - 1, (n, CROP_COUNT), dtype=np.uint64, endpoint=True)
    replan = np.random.default_rng(1)  # corpus(seed=1)'s plan, replayed to find its copies
    replan.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    originals = replan.choice(n, size=n // 100, replace=False)
    copies = replan.choice(
        np.setdiff1d(np.arange(n), originals), size=len(originals), replace=False
    )
    noise = rng.integers(0, 4, (len(copies), 1024), dtype=np.uint8)
    signatures[copies] = np.minimum(signatures[originals].astype(np.int32) + noise, 255)
    centres[copies] = centres[originals]
    mirrored = copies[::10]
    signatures[mirrored] = (
        signatures[originals[::10]].reshape(-1, 32, 32)[:, :, ::-1].reshape(-1, 1024)
    )
    hashes = hashes.copy()
    hashes[mirrored] = variants[originals[::10], 0]
    halves = rng.integers(0, 2**64 - 1, (n, 4), dtype=np.uint64, endpoint=True)
    # One asset in twenty in a uniform border, with a picture hash of its own (product shots on
    # white, letterboxed stills): the content rule searches these against every asset.
    framed = rng.random(n) < 0.05
    contents = np.where(
        framed, rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64, endpoint=True), 0
    ).astype(np.uint64)
    halves[copies] = halves[originals]
    prints = Fingerprints(
        halves=halves,
        contents=contents,
        phashes=hashes,
        variants=variants,
        centres=centres,
        crops=crops,
        signatures=signatures.astype(np.uint8),
        low_detail=np.zeros(n, dtype=bool),
        content=rng.integers(1, 2**62, n, dtype=np.int64),
        pixels=np.zeros(n, dtype=np.int64),
        short_sides=np.full(n, 3000, dtype=np.int32),  # camera photos: none under the signature
    )
    return prints, len(copies)


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def check_exact(
    hashes: NDArray[np.uint64], radius: int, pairs: set[tuple[int, int]], sample: int, seed: int
) -> int:
    """Pairs brute force finds for a sample of queries that the search missed (must be 0)."""
    missed = 0
    for q in np.random.default_rng(seed).choice(len(hashes), size=sample, replace=False):
        for j in np.flatnonzero(hamming(hashes, hashes[q]) <= radius):
            if j != q and (min(q, j), max(q, j)) not in pairs:
                missed += 1
    return missed


def faiss_pairs(hashes: NDArray[np.uint64], radius: int, threads: int) -> int:
    import faiss

    faiss.omp_set_num_threads(threads)
    codes = hashes.view(np.uint8).reshape(len(hashes), 8)
    chunks = 3 if len(hashes) >= 50_000 else 4  # the faster of faiss's settings at these sizes
    index = faiss.IndexBinaryMultiHash(64, chunks, 64 // chunks)
    index.nflip = radius // chunks
    index.add(codes)
    limits, _distances, _labels = index.range_search(codes, radius + 1)  # radius is strict
    return int((limits[-1] - len(hashes)) // 2)


def brute_pairs(hashes: NDArray[np.uint64], radius: int) -> int:
    found = 0
    for start in range(0, len(hashes), 1024):
        block = hashes[start : start + 1024]
        found += int(np.count_nonzero(np.bitwise_count(block[:, None] ^ hashes[None, :]) <= radius))
    return (found - len(hashes)) // 2


def bktree_seconds(hashes: NDArray[np.uint64], radius: int, queries: int) -> float:
    """Extrapolated time of pybktree over every asset, from `queries` of them."""
    import pybktree

    tree = pybktree.BKTree(lambda a, b: (a ^ b).bit_count(), [int(h) for h in hashes])
    sample = [int(h) for h in hashes[:queries]]
    start = time.perf_counter()
    for h in sample:
        tree.find(h, radius)
    return (time.perf_counter() - start) / queries * len(hashes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--radius", type=int, default=8)
    parser.add_argument("--baselines", default="faiss,brute,bktree")
    parser.add_argument("--verified", action="store_true", help="also time the verified rule")
    parser.add_argument("--threads", type=int, default=1, help="threads for dupfinder and faiss")
    args = parser.parse_args()
    n, radius = args.n, args.radius
    hashes = corpus(n, seed=1)
    threads = args.threads
    print(f"N = {n:,} hashes, radius {radius}; {threads} thread(s)")
    _, compile_s = timed(compile_ahead)
    print(f"index loops compiled or loaded from Numba's cache in {compile_s:.2f} s (untimed below)")

    (first, second, _), mih_s = timed(lambda: pairs_within(hashes, radius, threads=threads))
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    print(f"dupfinder multi-index      {mih_s:8.2f} s   {len(pairs):,} pairs")
    order = original_order(
        np.zeros(n, np.int64), np.zeros(n, np.int64), np.arange(n), [str(i) for i in range(n)]
    )
    groups, sets_s = timed(lambda: form_sets(hashes, order, radius, threads=threads))
    print(f"dupfinder sets (greedy)    {sets_s:8.2f} s   {len(groups):,} sets")
    _, exact_s = timed(lambda: form_sets(hashes, order, 0))
    print(f"dupfinder sets, radius 0   {exact_s:8.2f} s")
    missed = check_exact(hashes, radius, pairs, sample=200, seed=2)
    print(f"exactness: {missed} pairs missed for 200 sampled queries (checked by brute force)")
    tracemalloc.start()
    form_sets(hashes, order, radius)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    inputs = hashes.nbytes + order.nbytes
    print(
        f"memory: inputs {inputs / n:.0f} bytes per asset, search peak {peak / n:.0f} bytes per "
        "asset on top (tracemalloc, which counts NumPy's allocations and the compiled loops')"
    )

    if args.verified:
        stored, planted = fingerprints(hashes, seed=3)
        # As the worker searches: the scope's hashes, then signatures for the candidates only.
        bare = dataclasses.replace(
            stored, signatures=stored.signatures[:0], signature_rows=np.full(n, -1, np.intp)
        )

        def verified_search() -> list[Group]:
            pairs = candidate_pairs(bare, threads=threads)
            named = named_assets(pairs)
            read = [stored.signatures[i].tobytes() for i in named.tolist()]  # the store's part
            prints = with_signatures(bare, named, read)
            return form_verified_sets(prints, order, threads=threads, pairs=pairs)

        verified, verified_s = timed(verified_search)
        tracemalloc.start()  # a second run for memory: tracing slows allocations down
        verified_search()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        found = sum(len(g.members) - 1 for g in verified)
        columns = sum(
            getattr(bare, field.name).nbytes
            for field in dataclasses.fields(bare)
            if getattr(bare, field.name) is not None
        )
        print(
            f"dupfinder verified         {verified_s:8.2f} s   {len(verified):,} sets, {found:,} "
            f"members for {planted:,} planted copies; inputs {columns / n:.0f} bytes per asset, "
            f"peak {peak / n:.0f} bytes per asset on top"
        )

    wanted = set(args.baselines.split(","))
    if "faiss" in wanted:
        count, faiss_s = timed(lambda: faiss_pairs(hashes, radius, threads))
        print(
            f"faiss IndexBinaryMultiHash {faiss_s:8.2f} s   {count:,} pairs   "
            f"dupfinder is {faiss_s / mih_s:.1f}x faster"
        )
    if "brute" in wanted and n <= 200_000:
        count, brute_s = timed(lambda: brute_pairs(hashes, radius))
        print(
            f"numpy blocked brute force  {brute_s:8.2f} s   {count:,} pairs   "
            f"dupfinder is {brute_s / mih_s:.1f}x faster"
        )
    if "bktree" in wanted:
        estimate = bktree_seconds(hashes, radius, queries=min(200, n))
        print(
            f"BK-tree (pybktree)         {estimate:8.0f} s   extrapolated from 200 queries   "
            f"dupfinder is {estimate / mih_s:.0f}x faster"
        )


if __name__ == "__main__":
    main()
