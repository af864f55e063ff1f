"""Candidate pairs of a few changed assets, found without re-searching the rest: exactly the
pairs a full search names with one of them in it."""

from __future__ import annotations

import numpy as np
import pytest

from worker.core.fingerprint import CROP_COUNT
from worker.core.matching import (
    CENTRE_RADIUS,
    CONTENT_RADIUS,
    CROP_RADIUS,
    HALF_RADIUS,
    NEAR_RADIUS,
    TURN_RADIUS,
    Fingerprints,
    candidate_pairs,
    candidate_pairs_touching,
)
from worker.core.neighbours import BRUTE_FORCE_MAX, pairs_between


def _near(rng: np.random.Generator, value: np.uint64, bits: int) -> np.uint64:
    flips = rng.choice(64, size=bits, replace=False)
    return value ^ np.uint64(sum(1 << int(b) for b in flips))


def related_prints(n: int, seed: int) -> Fingerprints:
    """Random fingerprints where every proposal rule links some assets, at and around its
    radius: near pHashes and centres, a variant or a crop hash near another asset's pHash, the
    same bytes, the same pixels of low-detail assets, the content hash of a framed asset (one
    in five) near another's pHash or content hash."""
    rng = np.random.default_rng(seed)

    def random(*shape: int) -> np.ndarray:
        return rng.integers(0, 2**64 - 1, shape, dtype=np.uint64, endpoint=True)

    phashes, centres, variants, crops = random(n), random(n), random(n, 4), random(n, CROP_COUNT)
    contents = np.where(rng.random(n) < 0.2, random(n), 0).astype(np.uint64)
    # Halves, but none for one asset in ten (hashed before halves were)
    halves = np.where(rng.random((n, 1)) < 0.1, 0, random(n, 4)).astype(np.uint64)
    content = rng.integers(1, 2**62, n, dtype=np.int64)
    pixels = np.zeros(n, dtype=np.int64)
    low_detail = np.zeros(n, dtype=bool)
    partner = rng.permutation(n)
    for k, (a, b) in enumerate(zip(range(0, n, 3), partner[::3].tolist(), strict=False)):
        rule = k % 9
        if rule == 0:
            phashes[b] = _near(rng, phashes[a], k % (NEAR_RADIUS + 2))
        elif rule == 1:
            centres[b] = _near(rng, centres[a], k % (CENTRE_RADIUS + 2))
        elif rule == 2:
            variants[a, k % 4] = _near(rng, phashes[b], k % (TURN_RADIUS + 2))
        elif rule == 3:
            crops[a, k % CROP_COUNT] = _near(rng, phashes[b], k % (CROP_RADIUS + 2))
        elif rule == 4:
            content[b] = content[a]
        elif rule == 5:
            low_detail[[a, b]] = k % 4 != 0  # sometimes only the keys agree
            pixels[[a, b]] = k
        elif rule == 7:  # one half near the same half of another
            halves[b, k % 4] = _near(rng, halves[a, k % 4], k % (HALF_RADIUS + 2))
        elif rule == 6:  # a framed asset's picture near another's pHash
            contents[a] = _near(rng, phashes[b], k % (CONTENT_RADIUS + 2))
        else:  # two framed assets' pictures near each other
            contents[a] = random(1)[0]
            contents[b] = _near(rng, contents[a], k % (CONTENT_RADIUS + 2))
    return Fingerprints(
        phashes=phashes,
        variants=variants,
        centres=centres,
        crops=crops,
        signatures=np.zeros((0, 1024), dtype=np.uint8),
        low_detail=low_detail,
        content=content,
        pixels=pixels,
        contents=contents,
        halves=halves,
        short_sides=np.full(n, 1000, dtype=np.int32),
        signature_rows=np.full(n, -1, dtype=np.intp),
    )


def _pairs(pairs: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    return list(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


@pytest.mark.parametrize("n", [600, BRUTE_FORCE_MAX + 2000])
@pytest.mark.parametrize("changed", [1, 25, 400])
def test_pairs_of_changed_assets_are_the_full_searchs_pairs_that_name_them(
    n: int, changed: int
) -> None:
    prints = related_prints(n, seed=n + changed)
    full = candidate_pairs(prints)
    rows = np.random.default_rng(changed).choice(n, size=changed, replace=False)
    touching = np.zeros(n, dtype=bool)
    touching[rows] = True
    expected = [(i, j) for i, j in _pairs(full) if touching[i] or touching[j]]
    got = _pairs(candidate_pairs_touching(prints, rows, threads=2))
    assert got == expected  # sorted, each once, first < second
    if changed >= 25:
        assert len(expected) > 0  # the planted relations reach the changed rows


def test_no_changed_assets_have_no_pairs() -> None:
    prints = related_prints(600, seed=1)
    first, second = candidate_pairs_touching(prints, np.empty(0, dtype=np.intp))
    assert first.size == second.size == 0


@pytest.mark.parametrize(
    ("queries", "table", "columns"), [(50, 7, 1), (9000, 40, 3), (9000, 3500, 1)]
)
def test_pairs_between_two_sets_are_the_brute_force_pairs(
    queries: int, table: int, columns: int
) -> None:
    rng = np.random.default_rng(queries + table)
    q = rng.integers(0, 2**64 - 1, queries, dtype=np.uint64, endpoint=True)
    t = rng.integers(0, 2**64 - 1, (table, columns), dtype=np.uint64, endpoint=True)
    for k in range(table):  # each table row near some query, row k near query k included
        t[k, k % columns] = _near(rng, q[(k * 37) % queries if k % 2 else k], k % 6)
    first, second, distance = pairs_between(q, t if columns > 1 else t[:, 0], 4, threads=2)
    d = np.bitwise_count(q[:, None, None] ^ t[None, :, :]).min(axis=2)
    i, j = np.nonzero(d <= 4)
    expected = list(zip(i.tolist(), j.tolist(), d[i, j].tolist(), strict=True))
    assert list(zip(first.tolist(), second.tolist(), distance.tolist(), strict=True)) == expected
    assert any(a == b for a, b, _ in expected)  # a query and a table row at the same position
