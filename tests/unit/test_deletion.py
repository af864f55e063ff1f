"""Which duplicates a delete command may delete."""

from __future__ import annotations

from worker.core.deletion import AssetFacts, decide


def facts(asset_id: str, pixels: int = 100, uploaded: int = 0, pinned: int = 0) -> AssetFacts:
    return AssetFacts(asset_id, pixels, uploaded, pinned)


ORIGINAL = facts("o", pixels=200)


def test_assets_that_match_the_original_are_deleted() -> None:
    live = {"a": facts("a"), "b": facts("b")}
    decision = decide(ORIGINAL, ["a", "b"], live, frozenset(), duplicates={"a", "b"})
    assert (decision.delete, decision.rejected) == (["a", "b"], [])


def test_each_refusal_has_its_reason() -> None:
    live = {
        "far": facts("far"),
        "bigger": facts("bigger", pixels=300),
        "pinned": facts("pinned", pinned=5),
    }
    matching = {"bigger", "pinned"}
    decision = decide(
        ORIGINAL, ["o", "far", "bigger", "pinned", "ghost"], live, frozenset(), matching
    )
    assert decision.delete == []
    assert decision.rejected == [
        ("o", "is_original"),
        ("far", "not_a_duplicate"),
        ("bigger", "is_original"),
        ("pinned", "is_original"),
        ("ghost", "not_found"),
    ]


def test_non_matching_assets_are_not_duplicates_even_when_they_outrank_the_original() -> None:
    live = {"far": facts("far", pixels=999)}
    assert decide(ORIGINAL, ["far"], live, frozenset(), set()).rejected == [
        ("far", "not_a_duplicate")
    ]


def test_already_deleted_assets_are_reported_deleted_and_duplicates_decided_once() -> None:
    live = {"a": facts("a")}
    decision = decide(ORIGINAL, ["gone", "a", "a", "gone"], live, frozenset({"gone"}), {"a"})
    assert (decision.delete, decision.already_deleted, decision.rejected) == (["a"], ["gone"], [])
