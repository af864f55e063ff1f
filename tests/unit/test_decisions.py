"""The review decisions' pure core: distinct pairs never match, kept sets leave the answer until
new members join, and every original says why it leads."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from worker.core.decisions import DISTINCT, KEPT, NONE, decided, review
from worker.core.grouping import (
    Candidates,
    Group,
    form_sets,
    original_key,
    original_order,
    original_reason,
    with_reasons,
)


def candidates(hashes: list[int], pixels: list[int] | None = None) -> Candidates:
    n = len(hashes)
    return Candidates(
        asset_ids=[f"a{i}" for i in range(n)],
        phashes=np.array(hashes, dtype=np.uint64),
        pixels=np.array(pixels or [100] * n, dtype=np.int64),
        uploaded_at_us=np.arange(n, dtype=np.int64),
        pinned_at_us=np.zeros(n, dtype=np.int64),
        titles=[],
    )


def sets_of(found: list[Group], ids: list[str]) -> list[list[str]]:
    return [[ids[i] for i in g.members.tolist()] for g in found]


def grouped(c: Candidates, radius: int, decisions: list[tuple[str, list[str]]]) -> list[Group]:
    order = original_order(c.pinned_at_us, c.pixels, c.uploaded_at_us, c.asset_ids)
    made = decided(c.asset_ids, decisions)
    apart = None if made.distinct.count == 0 else made
    return form_sets(c.phashes, order, radius, apart=apart)


@pytest.mark.parametrize("radius", [0, 4])
def test_a_distinct_pair_is_no_match_and_the_other_member_may_lead_its_own_set(
    radius: int,
) -> None:
    c = candidates([0b1, 0b1, 0b1, 0b11])  # a0..a2 equal, a3 one bit off
    assert sets_of(grouped(c, radius, []), c.asset_ids) == (
        [["a0", "a1", "a2"]] if radius == 0 else [["a0", "a1", "a2", "a3"]]
    )

    found = grouped(c, radius, [(DISTINCT, ["a0", "a1"])])

    # a1 left a0's set, and leads the set of the assets a0 did not take (none here but a3)
    for members in sets_of(found, c.asset_ids):
        assert not {"a0", "a1"} <= set(members)
    assert ["a0", "a2", "a3"][: 2 if radius == 0 else 3] == sets_of(found, c.asset_ids)[0]


def test_every_pair_of_a_distinct_decision_is_kept_apart_and_only_those() -> None:
    c = candidates([7] * 6)
    found = grouped(c, 0, [(DISTINCT, ["a0", "a1", "a2"])])
    for members in sets_of(found, c.asset_ids):
        for x, y in itertools.combinations(members, 2):
            assert not {x, y} <= {"a0", "a1", "a2"}
    # the other three still join the first original
    assert sets_of(found, c.asset_ids)[0] == ["a0", "a3", "a4", "a5"]


@pytest.mark.parametrize("radius", [0, 4])
def test_two_members_kept_apart_never_join_one_original_and_the_later_stays_free(
    radius: int,
) -> None:
    c = candidates([5, 5, 5, 5, 5])
    # a0 matches everyone; a1 and a2 are no copies of one another, nor a3 and a4
    found = grouped(c, radius, [(DISTINCT, ["a1", "a2"]), (DISTINCT, ["a3", "a4"])])
    assert sets_of(found, c.asset_ids) == [["a0", "a1", "a3"], ["a2", "a4"]]


def test_apart_agrees_with_a_brute_force_check_on_random_decisions() -> None:
    rng = np.random.default_rng(3)
    n = 300
    ids = [f"a{i}" for i in range(n)]
    chosen = [rng.choice(n, size=rng.integers(2, 6), replace=False) for _ in range(120)]
    made = decided(ids, [(DISTINCT, [ids[i] for i in d]) for d in chosen])
    first = rng.integers(0, n, 5000).astype(np.intp)
    second = rng.integers(0, n, 5000).astype(np.intp)
    sets = [set(d.tolist()) for d in chosen]
    expected = [
        any(a in d and b in d for d in sets)
        for a, b in zip(first.tolist(), second.tolist(), strict=True)
    ]
    assert made.apart(first, second).tolist() == expected
    assert sum(expected) > 0


def test_placing_decisions_on_the_pairs_assets_alone_answers_alike() -> None:
    rng = np.random.default_rng(4)
    n = 500
    ids = [f"a{i}" for i in range(n)]
    found = [
        (DISTINCT if k % 2 else KEPT, [ids[i] for i in rng.choice(n, 3, replace=False)])
        for k in range(200)
    ]
    # Random pairs, and pairs from the decisions themselves (so some are kept apart or kept)
    drawn = [[int(a[1:]) for a in ids_[:2]] for _, ids_ in found[:100]]
    first = np.r_[rng.integers(0, n, 300), [d[0] for d in drawn]].astype(np.intp)
    second = np.r_[rng.integers(0, n, 300), [d[1] for d in drawn]].astype(np.intp)
    among = np.unique(np.concatenate((first, second))).astype(np.intp)

    everywhere, placed = decided(ids, found), decided(ids, found, among)

    assert placed.apart(first, second).tolist() == everywhere.apart(first, second).tolist()
    assert placed.apart(first, second).sum() >= 50
    sets = [
        Group(np.array(p, np.intp), np.zeros(2, np.int64)) for p in zip(first, second, strict=True)
    ]
    reviewed = [(g.kept, g.reopened) for g in review(sets, placed, include_kept=True)]
    assert reviewed == [(g.kept, g.reopened) for g in review(sets, everywhere, include_kept=True)]
    assert sum(kept for kept, _ in reviewed) >= 50
    assert decided(ids, found, np.empty(0, np.intp)).empty


def test_decisions_naming_fewer_than_two_candidates_are_left_out() -> None:
    made = decided(["a", "b"], [(DISTINCT, ["a", "zz"]), (KEPT, ["b", "yy"])])
    assert made.empty


def groups(*sets: list[int]) -> list[Group]:
    return [Group(np.array(s, dtype=np.intp), np.zeros(len(s), dtype=np.int64)) for s in sets]


def test_a_set_held_whole_by_a_keep_decision_leaves_the_answer_or_is_flagged() -> None:
    ids = [f"a{i}" for i in range(6)]
    made = decided(ids, [(KEPT, ["a0", "a1", "a2"])])
    found = groups([0, 1], [3, 4], [2, 0, 1])

    assert [g.members.tolist() for g in review(found, made, include_kept=False)] == [[3, 4]]
    shown = review(found, made, include_kept=True)
    assert [(g.members.tolist(), g.kept, g.reopened) for g in shown] == [
        ([0, 1], True, False),
        ([3, 4], False, False),
        ([2, 0, 1], True, False),
    ]


def test_a_kept_set_that_a_new_asset_joins_comes_back_with_the_newcomer_flagged() -> None:
    ids = [f"a{i}" for i in range(6)]
    made = decided(ids, [(KEPT, ["a0", "a1"]), (KEPT, ["a4", "a5"])])

    (reopened, untouched) = review(groups([5, 0, 1], [2, 3]), made, include_kept=False)

    assert reopened.reopened and not reopened.kept
    assert reopened.new is not None and reopened.new.tolist() == [True, False, False]
    assert not untouched.reopened and untouched.new is None
    # the flags survive ordering the members for the asset bank
    moved = reopened.taken(np.array([0, 2, 1], dtype=np.intp))
    assert moved.new is not None and moved.new.tolist() == [True, False, False]
    assert moved.members.tolist() == [5, 1, 0]


def test_no_decisions_change_nothing() -> None:
    found = groups([0, 1])
    assert review(found, NONE, include_kept=False) is found


@pytest.mark.parametrize(
    ("original", "runner_up", "reason"),
    [
        ((5, 1, 9, "b"), (0, 9, 0, "a"), "pinned"),
        ((6, 1, 9, "b"), (5, 9, 0, "a"), "pinned"),  # the latest pin of two
        ((0, 9, 9, "b"), (0, 1, 0, "a"), "most_pixels"),
        ((0, 9, 1, "b"), (0, 9, 2, "a"), "earliest_upload"),
        ((0, 9, 1, "a"), (0, 9, 1, "b"), "smallest_id"),
    ],
)
def test_the_original_reason_is_the_first_rule_that_separates_it(
    original: tuple[int, int, int, str], runner_up: tuple[int, int, int, str], reason: str
) -> None:
    assert original_reason(original_key(*original), original_key(*runner_up)) == reason


def test_every_formed_set_names_its_reason() -> None:
    c = candidates([1, 1, 2, 2, 3, 3], pixels=[100, 50, 100, 100, 7, 7])
    order = original_order(c.pinned_at_us, c.pixels, c.uploaded_at_us, c.asset_ids)
    found = with_reasons(c, form_sets(c.phashes, order, 0))
    assert [g.reason for g in found] == ["most_pixels", "earliest_upload", "earliest_upload"]
