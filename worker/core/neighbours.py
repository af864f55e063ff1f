"""Every pair of 64-bit hashes within a Hamming radius, exactly, without comparing all pairs.

Multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with Multi-Index
Hashing", CVPR 2012): split the 64 bits into `m` chunks. If two hashes differ in at most `r`
bits, some chunk differs in at most `r // m` of its bits (pigeonhole). So index every chunk, probe
each hash's chunk values with every flip of up to `r // m` bits, and check the full distance of
the few candidates that share a probed chunk value. Nothing within the radius is missed; the
tests compare it with brute force.

The probe loop is compiled (Numba, `nogil`, so threads run it side by side): per key and flip it
reads one bucket start from the table and checks the bucket's hashes in sequence, and a pair is
reported only by the first chunk that holds it, so nothing is materialised or de-duplicated in
between. Tables are filled by a counting sort. The number of chunks is chosen by a cost model
(table builds, probes and hashes checked, see `_plan`); when no split pays, the search falls
back to blocked brute force.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import combinations, pairwise
from math import comb
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.core.compiled import compiled

#: Below this many hashes, brute force is as fast as building an index.
BRUTE_FORCE_MAX = 3000
#: Probe keys handed to a thread at once: their buckets, under every flip, span a few hundred KB
#: of the bucket table, which then stays in cache while the flips run over it.
_PROBE_BLOCK = 1 << 15
#: Queries per table entry above which `pairs_between` first drops the queries that cannot
#: pair (`_may_pair`).
_FILTER_RATIO = 16
#: Rows compared at once by brute force (bounds its memory to a few tens of MB).
_BLOCK = 2048
#: Columns of a several-hashes-per-asset search indexed together (see `cross_pairs`). Each
#: indexed hash costs 8 bytes (its position and 32 of its bits, in bucket order), so five
#: columns keep a search under 100 bytes an asset on top of its inputs (76 measured at a
#: million assets; nine columns in one index peaked at 102). More indexes mean more probes.
_COLUMNS_PER_INDEX = 5
#: Hashes per bucket for which the probe does not branch on a bucket's emptiness (see
#: `_probe`): between these, two fifths to four fifths of buckets are empty, so the branch
#: mispredicts often. Measured at a million assets: 0.24 and 0.48 a bucket (pHash chunks)
#: probed 20 % faster without the branch; 1.9 and 2.4 (crop columns) 15 % slower.
_SPARSE_FILL = (0.2, 1.0)
#: Count-table entries (4 bytes each) per sorted entry up to which a sort is shared between
#: threads (`_sorted`): a million hashes in 21-bit chunks take two tables of 2^21 on two
#: threads, about 17 bytes a hash while the sort runs. A million-asset `verified` search's
#: candidates took 6.2 s at 8 (4: 6.6 s, 1: 7.2 s, none shared: 8.3 s; best of three, taking
#: turns), and its peak stayed at 84 bytes an asset: the tables live only while a chunk is
#: sorted, when the search holds less than at its peak.
_COUNTS_PER_ENTRY = 8
#: The probing side is ordered by this many of its chunk's top bits: nearly the locality of a
#: full sort, with a table of 256 KB instead of one as large as the index's.
_PROBE_ORDER_BITS = 16


def pairs_within(
    hashes: NDArray[np.uint64], radius: int, *, threads: int = 1
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """All (i, j, distance) with i < j and Hamming(hashes[i], hashes[j]) <= radius.

    Pairs come sorted by (i, j). `threads` > 1 splits the index probes between threads (the
    compiled probe loop runs without the GIL).
    """
    return _search(hashes, radius, None, threads)


def cross_pairs(
    queries: NDArray[np.uint64], hashes: NDArray[np.uint64], radius: int, *, threads: int = 1
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """All (i, j, distance) with i != j and Hamming(queries[i], hashes[j]) <= radius.

    `queries` and `hashes` describe the same assets (row i of each is asset i), e.g. the mirror
    variant of every asset against every pHash. `queries` may have several columns (several
    hashes per asset, indexed a few columns at a time); a pair close through several of them is
    reported once, with its smallest distance. Pairs come sorted by (i, j).
    """
    if len(hashes) < 2:
        return _empty()
    flat = queries.reshape(len(hashes), -1)
    per_asset = flat.shape[1]
    if per_asset == 1:
        return _search(hashes, radius, flat.reshape(-1), threads)
    # Several hashes per asset: index them and probe with the asset hashes instead. Both ways
    # meet the same candidates, but every probe key costs a random table read per flip, and this
    # way round there are fewer keys. At most `_COLUMNS_PER_INDEX` columns per index, spread
    # evenly (nine crop columns: three indexes of three).
    groups = -(-per_asset // _COLUMNS_PER_INDEX)
    parts = [
        _search(flat[:, lo:hi], radius, hashes, threads) for lo, hi in _shares(per_asset, groups)
    ]
    second, first, distance = (np.concatenate(column) for column in zip(*parts, strict=True))
    return _closest_once(first, second, distance)


def pairs_between(
    queries: NDArray[np.uint64], table: NDArray[np.uint64], radius: int, *, threads: int = 1
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """All (i, j, distance) with Hamming(queries[i], table[j]) <= radius, for two different
    sets: e.g. every asset's hashes against those of the few assets that changed.

    `table` may have several columns (hashes of one row j); a pair close through several is
    reported once, with its smallest distance. The index is built over `table`, the side meant
    to be small, and probed with every query. Pairs come sorted by (i, j).
    """
    table = table if table.ndim == 2 else table[:, None]
    if len(queries) == 0 or len(table) == 0:
        return _empty()
    if len(queries) > _FILTER_RATIO * table.size:
        where = _may_pair(queries, table, radius)
    else:
        where = np.arange(len(queries))
    kept = queries[where]
    if len(kept) == 0:
        return _empty()
    first, second, distance = _search(table, radius, kept, threads)
    # The search takes query i and table row i for one asset and never pairs them; here they
    # are different assets, so those pairs are checked directly.
    own = np.arange(min(len(kept), len(table)))
    own_distance = np.bitwise_count(kept[own, None] ^ table[own]).min(axis=1).astype(np.int64)
    close = own_distance <= radius
    first = np.concatenate([first, own[close]])
    second = np.concatenate([second, own[close]])
    return _closest_once(where[first], second, np.concatenate([distance, own_distance[close]]))


def _may_pair(
    queries: NDArray[np.uint64], table: NDArray[np.uint64], radius: int
) -> NDArray[np.intp]:
    """The queries that share some chunk with a table entry up to the chunk's flips: by the
    pigeonhole argument of the index, no other query is within `radius` of any entry.

    Probing a small table with many queries spent most of its time ordering the queries for
    the probe (0.4 s a chunk for nine million crop hashes); a marked-bucket look-up per chunk
    (the table's chunk values with every flip, as bits) drops nearly all of them first, with
    a few array operations. The split is the one that leaves the fewest queries.
    """
    entries = table.reshape(-1)
    best: tuple[float, list[tuple[int, int]]] | None = None
    for m in range(2, 9):
        chunks = _split(m)
        if max(w for _, w in chunks) > 24:
            continue
        flips = radius // m
        missed = 1.0
        for _, w in chunks:
            marks = len(entries) * sum(comb(w, k) for k in range(flips + 1))
            missed *= max(0.0, 1 - marks / 2**w)
        # a pass over the queries per chunk, against what the survivors then cost to search
        cost = m + 50 * (1 - missed)
        if best is None or cost < best[0]:
            best = (cost, chunks)
    assert best is not None
    chunks = best[1]
    flips = radius // len(chunks)
    hit = np.zeros(len(queries), dtype=bool)
    for shift, width in chunks:
        low = np.uint64((1 << width) - 1)
        marked = np.zeros(1 << width, dtype=bool)
        keys = ((entries >> np.uint64(shift)) & low).astype(np.int64)
        marked[(keys[:, None] ^ _flip_masks(width, flips)[None, :]).reshape(-1)] = True
        hit |= marked[(queries >> np.uint64(shift)) & low]
    return np.flatnonzero(hit)


def _closest_once(
    first: NDArray[np.intp], second: NDArray[np.intp], distance: NDArray[np.int64]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """Each (first, second) once, with its smallest distance, sorted by (first, second)."""
    if first.size == 0:
        return first.astype(np.intp), second.astype(np.intp), distance.astype(np.int64)
    order = np.lexsort((distance, second, first))
    first, second, distance = first[order], second[order], distance[order]
    keep = np.r_[True, (first[1:] != first[:-1]) | (second[1:] != second[:-1])]
    return first[keep], second[keep], distance[keep]


def _search(
    hashes: NDArray[np.uint64],
    radius: int,
    queries: NDArray[np.uint64] | None,
    threads: int,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """Pairs (query position, hash position, distance), sorted. `hashes` may have several
    columns (an (n, k) view, indexed in place): positions are then rows, and a query never pairs
    with its own row."""
    table = hashes if hashes.ndim == 2 else hashes[:, None]
    index_share = table.shape[1]
    n = table.size
    if n < (2 if queries is None else 1):
        return _empty()
    plan = _plan(n, radius, None if queries is None else len(queries))
    if plan is None:
        flat = table.reshape(-1)  # a copy only for columns, and only this small
        first, second, distance = _brute_force(flat, radius, queries, index_share)
    else:
        first, second, distance = _multi_index(table, radius, plan, queries, threads)
    second = second // index_share
    order = np.lexsort((distance, second, first))
    return first[order], second[order], distance[order]


def _empty() -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int64)


def compile_ahead() -> None:
    """Compile the index's loops now rather than in the first search (a few seconds; see
    `worker.core.compiled.compile_ahead`, which also compiles the others)."""
    hashes = np.random.default_rng(0).integers(0, 2**63, BRUTE_FORCE_MAX + 1).astype(np.uint64)
    pairs_within(hashes, 4)
    # More columns than one index takes: the column groups are strided views, as in a search.
    cross_pairs(np.stack([hashes] * (_COLUMNS_PER_INDEX + 1), axis=1), hashes, 4)


def _plan(n: int, radius: int, probes: int | None = None) -> list[tuple[int, int]] | None:
    """Chunks (shift, width) of an index over `n` hashes probed by `probes` hashes (the same
    ones by default), or None when brute force is cheaper.

    Cost model in nanoseconds, fitted on this machine with the compiled probe: each chunk's table
    of 2^width bucket starts costs about 3 to build; each probe (a key with some of its bits
    flipped) costs a random read of that table, about 4; each hash met in a probed bucket costs
    about 1 to check (the bucket is read in sequence). Fewer, wider chunks mean more flips but
    emptier buckets. E.g. radius 8: three 21-bit chunks at a million hashes (4.2 s on one
    thread when this was fitted; four 16-bit chunks took 10 s), five 13-bit chunks at 100 000
    (0.13 s; three took 0.23 s).
    """
    probes = n if probes is None else probes
    if n <= BRUTE_FORCE_MAX and probes <= BRUTE_FORCE_MAX:
        return None
    best: tuple[float, list[tuple[int, int]]] | None = None
    for m in range(2, 9):
        chunks = _split(m)
        if max(w for _, w in chunks) > 24:  # tables of 2^width entries: at most 64 MiB
            continue
        flips = radius // m
        cost = 0.0
        for _, w in chunks:
            flipped = probes * sum(comb(w, k) for k in range(flips + 1))
            cost += 3 * 2**w + flipped * (4 + n / 2**w)
        if best is None or cost < best[0]:
            best = (cost, chunks)
    # Brute force compares every pair, about 1 ns each in NumPy's blocked popcount.
    if best is None or best[0] > n * probes / 2:
        return None
    return best[1]


def _split(m: int) -> list[tuple[int, int]]:
    """The 64 bits as `m` chunks (shift, width) of near-equal widths."""
    return [(lo, hi - lo) for lo, hi in _shares(64, m)]


def _brute_force(
    hashes: NDArray[np.uint64],
    radius: int,
    queries: NDArray[np.uint64] | None = None,
    index_share: int = 1,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    firsts, seconds, distances = [], [], []
    n = len(hashes) if queries is None else len(queries)
    for start in range(0, n, _BLOCK):
        if queries is None:  # each pair once: compare a block with itself and what follows
            block, rest, offset = hashes[start : start + _BLOCK], hashes[start:], start
        else:
            block, rest, offset = queries[start : start + _BLOCK], hashes, 0
        d = np.bitwise_count(block[:, None] ^ rest[None, :])
        rows, cols = np.nonzero(d <= radius)
        i, j = rows + start, cols + offset
        keep = i < j if queries is None else i != j // index_share
        firsts.append(i[keep])
        seconds.append(j[keep])
        distances.append(d[rows[keep], cols[keep]].astype(np.int64))
    return (
        np.concatenate(firsts).astype(np.intp),
        np.concatenate(seconds).astype(np.intp),
        np.concatenate(distances),
    )


def _flip_masks(width: int, flips: int) -> NDArray[np.int32]:
    masks = [0]
    for k in range(1, flips + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(width), k)]
    return np.array(masks, dtype=np.int32)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One chunk's index: the hashes sorted by chunk value with each bucket's start, and the
    probing side (the same hashes, or the queries) sorted by chunk value too.

    int32 keys and tables: the random reads of the probes are the cost, and half the bytes keep
    twice as much of the table in cache.
    """

    order: NDArray[np.int32]
    values: NDArray[np.uint32]
    """32 bits of each hash (see `_bits`) in bucket order: checking a bucket reads memory
    in sequence, and the full hash is read only for the few that pass on these bits."""
    starts: NDArray[np.int32]
    probe_order: NDArray[np.int32]
    probe_keys: NDArray[np.int32]
    probe_values: NDArray[np.uint32]

    @classmethod
    def build(
        cls,
        pool: ThreadPoolExecutor,
        threads: int,
        table: NDArray[np.uint64],
        queries: NDArray[np.uint64] | None,
        shift: int,
        width: int,
    ) -> _Chunk:
        """The chunk's tables over `table` (rows x columns, entry r * columns + c), probed by
        `queries` or, when None, by the entries themselves; the gathers of their bits shared by
        `threads` threads of `pool`."""
        order, starts = _sorted(pool, threads, table, shift, width, 0)
        values = _bits(pool, threads, table, order, shift + width, 32)
        if queries is None:
            keys = _bits(pool, threads, table, order, shift, width).view(np.int32)
            return cls(order, values, starts, order, keys, values)
        probing = queries[:, None]
        drop = max(width - _PROBE_ORDER_BITS, 0)
        probe_order, _ = _sorted(pool, threads, probing, shift, width, drop)
        keys = _bits(pool, threads, probing, probe_order, shift, width).view(np.int32)
        probe_values = _bits(pool, threads, probing, probe_order, shift + width, 32)
        return cls(order, values, starts, probe_order, keys, probe_values)


def _shares(size: int, parts: int) -> list[tuple[int, int]]:
    """`range(size)` cut into `parts` consecutive (start, stop) parts of near-equal length."""
    bounds = np.linspace(0, size, parts + 1).round().astype(int).tolist()
    return list(pairwise(bounds))


def _bits(
    pool: ThreadPoolExecutor,
    threads: int,
    table: NDArray[np.uint64],
    order: NDArray[np.int32],
    skip: int,
    width: int,
) -> NDArray[np.uint32]:
    """`_bits_into` over all of `order`, each thread filling its own part of the result: random
    reads of the table, which two threads do in 0.07-0.08 s for five million entries against
    0.13-0.14 s for one. Building the chunks' tables was half of a million-asset `verified`
    search on two threads."""
    bits = np.empty(len(order), np.uint32)
    parts = _shares(len(order), threads)
    list(pool.map(lambda part: _bits_into(table, order, skip, width, bits, *part), parts))
    return bits


@compiled
def _bits_into(
    table: NDArray[np.uint64],
    order: NDArray[np.int32],
    skip: int,
    width: int,
    bits: NDArray[np.uint32],
    start: int,
    stop: int,
) -> None:
    """Into `bits[start:stop]`: `width` (at most 32) bits after the first `skip` of the entries
    of `table` (entry r * columns + c; bits counted cyclically from the lowest), in `order`: a
    chunk's keys, or the 32 bits that follow the chunk.

    Those 32 bits are what an index keeps of each hash: the chunk's key does not hold them
    (chunks are at most 24 bits wide), and two hashes more than the radius apart on them are
    further apart in full. So the probe rejects almost every hash of a bucket on four bytes,
    which halves what an indexed hash costs in memory and in cache.
    """
    columns = np.uint32(table.shape[1])
    low = np.uint64((1 << width) - 1)
    for k in range(start, stop):
        bits[k] = np.uint32(_rotated(_entry(table, order[k], columns), skip) & low)


@compiled(inline=True)
def _entry(table: NDArray[np.uint64], entry: np.int32, columns: np.uint32) -> np.uint64:
    # Unsigned division: Python's floor division of signed numbers took twice as long as the
    # random read of the entry (68 against 29 ms for three million entries).
    position = np.uint32(entry)
    row = position // columns
    return table[row, position - row * columns]


@compiled(inline=True)
def _rotated(value: np.uint64, skip: int) -> np.uint64:
    """`value` rotated right by `skip` bits."""
    skip %= 64
    if skip == 0:
        return value
    return (value >> np.uint64(skip)) | (value << np.uint64(64 - skip))


def _sorted(
    pool: ThreadPoolExecutor,
    threads: int,
    table: NDArray[np.uint64],
    shift: int,
    width: int,
    drop: int,
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """The entries of `table` (entry r * columns + c) in the order of their chunk key (bits
    shift .. shift + width) without its lowest `drop` bits, and where each run starts.

    A counting sort: two passes over the entries, where a comparison sort of millions of keys
    costs a second. The keys are computed in each pass rather than kept (four bytes an entry
    at the peak of a search). The passes are shared by `threads` threads of `pool` when that
    pays: each counts, then places, the entries of its own rows, with a count table of its own
    (so those tables must not outweigh the entries by much, `_COUNTS_PER_ENTRY`), and the
    order within a run stays ascending, a thread's rows all coming before the next's. Sharing
    the buckets instead (each thread reading every entry, counting and placing only its own)
    took as long as one thread. The sorts were the one-thread part of a search: 2.2-2.4 s of
    the 4.5-4.8 s that the fifteen crop columns of a million assets took on two threads.
    """
    rows, columns = table.shape
    buckets = 1 << (width - drop)
    if rows < 2 * threads or threads * buckets > _COUNTS_PER_ENTRY * rows * columns:
        threads = 1
    parts = _shares(rows, threads)
    counts = np.zeros((threads, buckets), np.int32)
    list(
        pool.map(
            lambda t: _count_rows(table, shift, width, drop, counts[t], *parts[t]), range(threads)
        )
    )
    starts = _thread_offsets(counts)
    order = np.empty(rows * columns, np.int32)
    list(
        pool.map(
            lambda t: _place_rows(table, shift, width, drop, counts[t], order, *parts[t]),
            range(threads),
        )
    )
    return order, starts


@compiled
def _count_rows(
    table: NDArray[np.uint64],
    shift: int,
    width: int,
    drop: int,
    counts: NDArray[np.int32],
    start: int,
    stop: int,
) -> None:
    """How many entries of rows `start:stop` fall in each bucket, into `counts`."""
    low = np.uint64((1 << width) - 1)
    at, below = np.uint64(shift), np.uint64(drop)
    for r in range(start, stop):
        for c in range(table.shape[1]):
            counts[((table[r, c] >> at) & low) >> below] += 1


@compiled
def _thread_offsets(counts: NDArray[np.int32]) -> NDArray[np.int32]:
    """Each bucket's start (and the total, last), while each thread's counts become where its
    entries of that bucket go: after the earlier threads' entries of it."""
    threads, buckets = counts.shape
    starts = np.empty(buckets + 1, np.int32)
    running = 0
    for b in range(buckets):
        starts[b] = running
        for t in range(threads):
            count = counts[t, b]
            counts[t, b] = running
            running += count
    starts[buckets] = running
    return starts


@compiled
def _place_rows(
    table: NDArray[np.uint64],
    shift: int,
    width: int,
    drop: int,
    offsets: NDArray[np.int32],
    order: NDArray[np.int32],
    start: int,
    stop: int,
) -> None:
    """The entries of rows `start:stop` into `order`, each at its bucket's next place."""
    low = np.uint64((1 << width) - 1)
    at, below = np.uint64(shift), np.uint64(drop)
    columns = table.shape[1]
    for r in range(start, stop):
        for c in range(columns):
            bucket = ((table[r, c] >> at) & low) >> below
            order[offsets[bucket]] = r * columns + c
            offsets[bucket] += 1


@compiled(inline=True)
def _popcount(x: np.uint64) -> np.uint64:
    # The SWAR count, which LLVM turns into the CPU's popcnt instruction.
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@compiled
def _probe(
    probe_keys: NDArray[np.int32],
    probe_order: NDArray[np.int32],
    probe_values: NDArray[np.uint32],
    masks: NDArray[np.int32],
    starts: NDArray[np.int32],
    order: NDArray[np.int32],
    values: NDArray[np.uint32],
    table: NDArray[np.uint64],
    probes: NDArray[np.uint64],
    radius: int,
    self_join: bool,
    sparse: bool,
    earlier_shifts: NDArray[np.uint64],
    earlier_masks: NDArray[np.uint64],
    flips: int,
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:
    """Close (probe, hash, distance) pairs sharing a chunk value up to one of `masks` flips.

    One compiled loop per probe key and flip: the bucket's hashes are checked in place, so no
    candidate list is ever materialised. They are checked on 32 bits first (`_bits`); the
    full hashes (`table`, and `probes` by probe position) are read only for those that pass.
    A pair that some earlier chunk (`earlier_shifts`, `earlier_masks`) also holds within
    `flips` bits was reported by that chunk's pass, so it is skipped here: every pair comes out
    once, with no de-duplication afterwards. `sparse`: buckets are empty at random (see
    `_SPARSE_FILL`), so the first slot is checked without branching on whether it exists.
    """
    size = 1024
    out_probe = np.empty(size, np.int32)
    out_hash = np.empty(size, np.int32)
    out_distance = np.empty(size, np.int32)
    found = 0
    last = len(values) - 1
    index_share = np.uint32(table.shape[1])
    for mask in masks:
        for p in range(len(probe_keys)):
            key = probe_keys[p] ^ mask
            lo, hi = starts[key], starts[key + 1]
            value = probe_values[p]
            if sparse:
                # Check the first slot without asking whether there is one (its index clamped
                # for an empty last bucket), and start the loop past it unless it is close.
                close = _popcount(np.uint64(value ^ values[min(lo, last)])) <= radius
                if not ((lo < hi) & close):
                    lo += 1
            elif lo == hi:
                continue
            query = probe_order[p]
            for slot in range(lo, hi):
                if _popcount(np.uint64(value ^ values[slot])) > radius:
                    continue
                candidate = order[slot]
                if self_join:
                    if query >= candidate:
                        continue
                elif query == np.uint32(candidate) // index_share:
                    continue
                diff = probes[query] ^ _entry(table, candidate, index_share)
                distance = _popcount(diff)
                if distance > radius:
                    continue
                seen = False
                for e in range(len(earlier_shifts)):
                    if _popcount((diff >> earlier_shifts[e]) & earlier_masks[e]) <= flips:
                        seen = True
                        break
                if seen:
                    continue
                if found == size:
                    size *= 2
                    out_probe = _grown(out_probe, size)
                    out_hash = _grown(out_hash, size)
                    out_distance = _grown(out_distance, size)
                out_probe[found] = query
                out_hash[found] = candidate
                out_distance[found] = distance
                found += 1
    return out_probe[:found], out_hash[:found], out_distance[:found]


def _probe_block(
    shared: tuple[Any, ...], block: tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.uint32]]
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:
    return _probe(*block, *shared)


@compiled
def _grown(values: NDArray[np.int32], size: int) -> NDArray[np.int32]:
    bigger = np.empty(size, np.int32)
    bigger[: len(values)] = values
    return bigger


def _chunk_pairs(
    pool: ThreadPoolExecutor,
    threads: int,
    table: NDArray[np.uint64],
    queries: NDArray[np.uint64] | None,
    radius: int,
    earlier: list[tuple[int, int]],
    chunk_bits: tuple[int, int],
    flips: int,
) -> list[tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]]:
    """The pairs one chunk reports (see `_probe`). A function of its own so that the chunk's
    tables, and the probe blocks that view them, are freed before the next chunk is built:
    two chunks alive at once were half the peak memory of a search."""
    shift, width = chunk_bits
    chunk = _Chunk.build(pool, threads, table, queries, shift, width)
    masks = _flip_masks(width, flips)
    earlier_shifts = np.array([s for s, _ in earlier], dtype=np.uint64)
    earlier_masks = np.array([(1 << w) - 1 for _, w in earlier], dtype=np.uint64)
    # The chunk's tables and the search's terms, then the probe keys a block at a time.
    probes = table[:, 0] if queries is None else queries
    shared: tuple[Any, ...] = (masks, chunk.starts, chunk.order, chunk.values, table, probes)
    # Buckets that are empty about as often as not make the emptiness branch a coin toss.
    sparse = bool(_SPARSE_FILL[0] <= table.size / 2**width <= _SPARSE_FILL[1])
    shared += (radius, queries is None, sparse, earlier_shifts, earlier_masks, flips)
    blocks = [
        (chunk.probe_keys[part], chunk.probe_order[part], chunk.probe_values[part])
        for lo in range(0, len(chunk.probe_keys), _PROBE_BLOCK)
        for part in (slice(lo, lo + _PROBE_BLOCK),)
    ]
    return list(pool.map(partial(_probe_block, shared), blocks))


def _multi_index(
    table: NDArray[np.uint64],
    radius: int,
    chunks: list[tuple[int, int]],
    queries: NDArray[np.uint64] | None = None,
    threads: int = 1,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """Pairs within `radius`: among the entries of `table` (i < j), or (query, entry) when
    `queries` is given (a query never pairs with the entries of its own row). Entries are
    numbered r * columns + c. One chunk's tables at a time; its probe keys are shared between
    `threads` in blocks."""
    flips = radius // len(chunks)
    found: list[tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]] = []
    with ThreadPoolExecutor(threads) as pool:
        for c, (shift, width) in enumerate(chunks):
            found += _chunk_pairs(
                pool, threads, table, queries, radius, chunks[:c], (shift, width), flips
            )
    if not found:
        return _empty()
    first, second, distance = (np.concatenate(column) for column in zip(*found, strict=True))
    return first.astype(np.intp), second.astype(np.intp), distance.astype(np.int64)
