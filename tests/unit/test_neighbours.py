"""Close pairs by multi-index hashing: exactly the pairs brute force finds."""

from __future__ import annotations

import numpy as np
import pytest

from worker.core import neighbours
from worker.core.grouping import Group, form_sets, hamming
from worker.core.neighbours import BRUTE_FORCE_MAX, cross_pairs, pairs_within


def photo_like_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes with planted near copies (0 to 12 bits away) and exact copies."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for k, i in enumerate(range(0, n - 1, 7)):
        flips = rng.choice(64, size=k % 13, replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        hashes[i + 1] = hashes[i] ^ mask
    hashes[5::97] = hashes[4::97][: len(hashes[5::97])]
    return hashes


def brute_pairs(hashes: np.ndarray, radius: int) -> set[tuple[int, int, int]]:
    found = set()
    for i in range(len(hashes)):
        d = hamming(hashes[i + 1 :], hashes[i])
        for j in np.flatnonzero(d <= radius):
            found.add((i, i + 1 + int(j), int(d[j])))
    return found


@pytest.mark.parametrize("n", [BRUTE_FORCE_MAX + 1, 12_000])
@pytest.mark.parametrize("radius", [0, 1, 4, 8, 10])
def test_the_index_finds_exactly_the_brute_force_pairs(n: int, radius: int) -> None:
    hashes = photo_like_hashes(n, seed=radius)
    first, second, distance = pairs_within(hashes, radius)
    assert set(zip(first.tolist(), second.tolist(), distance.tolist(), strict=True)) == (
        brute_pairs(hashes, radius)
    )
    assert np.all(first < second)
    assert len(set(zip(first.tolist(), second.tolist(), strict=True))) == len(first)


@pytest.mark.parametrize("chunks", [3, 4, 5])
@pytest.mark.parametrize("radius", [6, 8, 10])
def test_every_split_of_the_index_finds_exactly_the_brute_force_pairs(
    chunks: int, radius: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cost model picks 3 chunks (2 flipped bits a chunk at radius 8) only at about a million
    # hashes; here every split is forced at a size brute force can check, so each chunk's flips
    # and the rule that a pair is reported by the first chunk holding it are tested at 1-3 flips.
    split = neighbours._split(chunks)
    monkeypatch.setattr(neighbours, "_plan", lambda *_: split)
    hashes = photo_like_hashes(6000, seed=chunks * 100 + radius)
    first, second, distance = pairs_within(hashes, radius, threads=2)
    found = list(zip(first.tolist(), second.tolist(), distance.tolist(), strict=True))
    assert len(found) == len(set(found))
    assert set(found) == brute_pairs(hashes, radius)


def greedy_reference(hashes: np.ndarray, order: np.ndarray, radius: int) -> list[Group]:
    """The product's rule over a shrinking pool, compared with everything left (quadratic)."""
    pool, groups = order.copy(), []
    while len(pool) > 1:
        d = hamming(hashes[pool], hashes[pool[0]])
        hit = d <= radius
        if hit.sum() >= 2:
            groups.append(Group(pool[hit], d[hit]))
        pool = pool[~hit]
    return groups


@pytest.mark.parametrize("radius", [2, 6, 10])
def test_sets_over_the_index_follow_the_rule(radius: int) -> None:
    hashes = photo_like_hashes(8000, seed=100 + radius)
    order = np.random.default_rng(radius).permutation(len(hashes)).astype(np.intp)
    got = form_sets(hashes, order, radius)
    want = greedy_reference(hashes, order, radius)
    assert [g.members.tolist() for g in got] == [g.members.tolist() for g in want]
    assert [g.distances.tolist() for g in got] == [g.distances.tolist() for g in want]


@pytest.mark.parametrize("n", [500, BRUTE_FORCE_MAX + 1, 12_000])
@pytest.mark.parametrize("radius", [0, 2, 6])
def test_cross_pairs_are_exactly_the_brute_force_pairs(n: int, radius: int) -> None:
    hashes = photo_like_hashes(n, seed=radius)
    # Queries: other hashes of the same assets, some planted near another asset's hash.
    rng = np.random.default_rng(radius + 100)
    queries = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    queries[::11] = hashes[np.arange(0, n, 11) // 2] ^ np.uint64(0b101)
    queries[3] = hashes[3]  # an asset matching itself is not a pair
    first, second, distance = cross_pairs(queries, hashes, radius)
    expected = set()
    for i in range(n):
        d = hamming(hashes, queries[i])
        expected |= {(i, int(j), int(d[j])) for j in np.flatnonzero(d <= radius) if j != i}
    found = set(zip(first.tolist(), second.tolist(), distance.tolist(), strict=True))
    assert found == expected
    assert len(found) > 0 or radius < 2


@pytest.mark.parametrize("threads", [1, 3])  # three: the threads' shares of a table differ
@pytest.mark.parametrize(("n", "columns"), [(700, 3), (BRUTE_FORCE_MAX + 1, 3), (5000, 7)])
def test_cross_pairs_over_several_hashes_per_asset_report_each_pair_once_at_its_closest(
    n: int, columns: int, threads: int
) -> None:
    hashes = photo_like_hashes(n, seed=5)
    rng = np.random.default_rng(6)
    queries = rng.integers(0, 2**64 - 1, (n, columns), dtype=np.uint64, endpoint=True)
    partner = (np.arange(n) * 7 + 1) % n
    queries[::5, 0] = hashes[partner[::5]] ^ np.uint64(0b11)  # 2 bits from a partner
    # and the same partner exactly in a later column (with 7 columns, in another index group)
    queries[::5, columns - 1] = hashes[partner[::5]]
    queries[1::9, 1] = hashes[1::9]  # an asset's own hash is never a pair
    first, second, distance = cross_pairs(queries, hashes, 4, threads=threads)
    found = list(zip(first.tolist(), second.tolist(), distance.tolist(), strict=True))
    expected = set()
    for i in range(n):
        d = np.min([hamming(hashes, q) for q in queries[i]], axis=0)
        expected |= {(i, int(j), int(d[j])) for j in np.flatnonzero(d <= 4) if j != i}
    assert len(found) == len(set(found)) and set(found) == expected
    assert any(d == 0 for _, _, d in found)


@pytest.mark.parametrize(
    ("rows", "columns", "width", "drop"),
    [(20_000, 1, 13, 0), (9_000, 3, 16, 0), (40_000, 1, 21, 5), (5_000, 15, 12, 0)],
)
def test_the_counting_sort_is_a_stable_sort_by_chunk_key_on_any_number_of_threads(
    rows: int, columns: int, width: int, drop: int
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Column groups are strided views in a search, so the table here is one too
    rng = np.random.default_rng(rows)
    table = rng.integers(0, 2**63, (rows, 16), dtype=np.int64).astype(np.uint64)[:, 1 : 1 + columns]
    keys = ((table.reshape(-1) >> np.uint64(7)) & np.uint64((1 << width) - 1)) >> np.uint64(drop)
    expected_order = np.argsort(keys, kind="stable")  # entries ascending within a bucket
    expected_starts = np.searchsorted(keys[expected_order], np.arange((1 << (width - drop)) + 1))
    with ThreadPoolExecutor(3) as pool:
        for threads in (1, 2, 3):
            # These sizes are shared between the threads, not handed to one
            assert threads * (1 << (width - drop)) <= neighbours._COUNTS_PER_ENTRY * table.size
            order, starts = neighbours._sorted(pool, threads, table, 7, width, drop)
            assert np.array_equal(order, expected_order)
            assert np.array_equal(starts, expected_starts)
