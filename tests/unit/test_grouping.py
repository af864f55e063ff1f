"""The grouping core: sets form around originals, in the product's original order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.grouping import (
    Group,
    arrange,
    form_sets,
    hamming,
    original_key,
    original_order,
    sort_rank,
)


def u64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def as_lists(groups: list[Group]) -> list[list[int]]:
    return [g.members.tolist() for g in groups]


def test_original_order_pins_first_then_pixels_then_earliest_then_id() -> None:
    ids = ["e", "d", "c", "b", "a", "p1", "p2"]
    pinned = i64(0, 0, 0, 0, 0, 10, 20)
    pixels = i64(100, 200, 200, 200, 200, 1, 1)
    uploaded = i64(0, 5, 3, 3, 3, 0, 0)
    order = original_order(pinned, pixels, uploaded, ids)
    # p2 (latest pin), p1, then most pixels; among 200-pixel ones the earliest upload, then id
    assert [ids[i] for i in order] == ["p2", "p1", "a", "b", "c", "d", "e"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 4), st.integers(0, 4), st.text("abc", max_size=3)
        ),
        min_size=1,
        max_size=30,
        unique_by=lambda t: t[3],
    )
)
def test_vectorised_order_equals_the_key_order(rows: list[tuple[int, int, int, str]]) -> None:
    pinned, pixels, uploaded, ids = (list(col) for col in zip(*rows, strict=True))
    order = original_order(i64(*pinned), i64(*pixels), i64(*uploaded), ids)
    by_key = sorted(
        range(len(rows)), key=lambda i: original_key(pinned[i], pixels[i], uploaded[i], ids[i])
    )
    assert order.tolist() == by_key


def test_radius_zero_groups_equal_hashes_with_the_original_first() -> None:
    hashes = u64(7, 9, 7, 8, 9, 7)
    order = np.array([5, 4, 3, 2, 1, 0], dtype=np.intp)
    groups = form_sets(hashes, order, 0)
    assert as_lists(groups) == [[5, 2, 0], [4, 1]]
    assert all(g.distances.tolist() == [0] * len(g.members) for g in groups)


def test_singletons_are_not_sets() -> None:
    assert form_sets(u64(1, 2, 3), np.arange(3, dtype=np.intp), 0) == []
    assert form_sets(u64(1, 2, 4), np.arange(3, dtype=np.intp), 0) == []


def test_chains_never_snowball_into_one_set() -> None:
    # a -1 bit- b -1 bit- c: with radius 1, a gathers b; c is 2 bits from a and stays out
    a, b, c = 0b000, 0b001, 0b011
    groups = form_sets(u64(a, b, c), np.array([0, 1, 2], dtype=np.intp), 1)
    assert as_lists(groups) == [[0, 1]]
    assert groups[0].distances.tolist() == [0, 1]


def test_originals_gather_before_later_assets() -> None:
    # c comes first in original order, so it gathers b even though a is also b's neighbour
    a, b, c = 0b000, 0b001, 0b011
    groups = form_sets(u64(a, b, c), np.array([2, 0, 1], dtype=np.intp), 1)
    assert as_lists(groups) == [[2, 1]]


def reference_sets(hashes: list[int], order: list[int], radius: int) -> list[list[int]]:
    """The rule as the product states it, written plainly."""
    assigned: set[int] = set()
    sets = []
    for i in order:
        if i in assigned:
            continue
        members = [i] + [
            j
            for j in order
            if j not in assigned and j != i and (hashes[i] ^ hashes[j]).bit_count() <= radius
        ]
        assigned.update(members)
        if len(members) >= 2:
            sets.append(members)
    return sets


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40),
    st.integers(0, 32),
    st.randoms(use_true_random=False),
)
def test_form_sets_equals_the_plain_rule(hashes: list[int], radius: int, rnd) -> None:  # type: ignore[no-untyped-def]
    # Cluster some hashes so that radii actually matter
    hashes = [h if i % 3 else hashes[0] ^ (1 << (i % 64)) for i, h in enumerate(hashes)]
    order = list(range(len(hashes)))
    rnd.shuffle(order)
    groups = form_sets(u64(*hashes), np.array(order, dtype=np.intp), radius)
    assert as_lists(groups) == reference_sets(hashes, order, radius)
    for g in groups:
        assert g.distances.tolist() == [
            (hashes[g.members[0]] ^ hashes[m]).bit_count() for m in g.members
        ]


def test_hamming_counts_differing_bits() -> None:
    assert hamming(u64(0, 2**64 - 1, 0b1011), np.uint64(0)).tolist() == [0, 64, 3]


def test_sort_rank_breaks_ties_by_ascending_id_in_both_directions() -> None:
    ids = ["b", "a", "c"]
    assert sort_rank([5, 5, 1], ids, descending=True).tolist() == [1, 0, 2]
    assert sort_rank([5, 5, 1], ids, descending=False).tolist() == [2, 1, 0]


def test_arrange_orders_sets_by_their_best_member_and_keeps_originals_first() -> None:
    groups = [
        Group(np.array([0, 1, 2], dtype=np.intp), i64(0, 1, 2)),
        Group(np.array([3, 4], dtype=np.intp), i64(0, 3)),
    ]
    rank = np.array([6, 5, 1, 4, 0], dtype=np.intp)  # asset 4 ranks first, asset 2 second
    arranged = arrange(groups, rank)
    assert as_lists(arranged) == [[3, 4], [0, 2, 1]]
    assert [g.distances.tolist() for g in arranged] == [[0, 3], [0, 2, 1]]


@pytest.mark.parametrize("radius", [0, 4])
def test_empty_input(radius: int) -> None:
    assert form_sets(u64(), np.array([], dtype=np.intp), radius) == []
