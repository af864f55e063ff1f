"""Which duplicates a delete command may delete."""

from __future__ import annotations

from worker.deletion import AssetFacts, decide


def facts(
    asset_id: str, phash: int, pixels: int = 100, uploaded: int = 0, pinned: int = 0
) -> AssetFacts:
    return AssetFacts(asset_id, phash, pixels, uploaded, pinned)


ORIGINAL = facts("o", 0b0000, pixels=200)


def test_duplicates_within_the_radius_are_deleted() -> None:
    live = {"a": facts("a", 0b0000), "b": facts("b", 0b0011)}
    decision = decide(ORIGINAL, ["a", "b"], live, frozenset(), max_distance=2)
    assert (decision.delete, decision.rejected) == (["a", "b"], [])


def test_each_refusal_has_its_reason() -> None:
    live = {
        "far": facts("far", 0b0111),
        "bigger": facts("bigger", 0b0000, pixels=300),
        "pinned": facts("pinned", 0b0000, pinned=5),
    }
    decision = decide(ORIGINAL, ["o", "far", "bigger", "pinned", "ghost"], live, frozenset(), 2)
    assert decision.delete == []
    assert decision.rejected == [
        ("o", "is_original"),
        ("far", "not_a_duplicate"),
        ("bigger", "is_original"),
        ("pinned", "is_original"),
        ("ghost", "not_found"),
    ]


def test_far_assets_are_not_duplicates_even_when_they_outrank_the_original() -> None:
    live = {"far": facts("far", 0b1111, pixels=999)}
    assert decide(ORIGINAL, ["far"], live, frozenset(), 2).rejected == [("far", "not_a_duplicate")]


def test_already_deleted_assets_are_reported_deleted_and_duplicates_decided_once() -> None:
    live = {"a": facts("a", 0)}
    decision = decide(ORIGINAL, ["gone", "a", "a", "gone"], live, frozenset({"gone"}), 0)
    assert (decision.delete, decision.already_deleted, decision.rejected) == (["a"], ["gone"], [])
