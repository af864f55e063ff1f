"""The queries a search's scope becomes: whole portals in slices of their hashes, id lists in
chunks, criteria as they are."""

from __future__ import annotations

import numpy as np

from schemas.messages import Scope
from worker.store import HASH_SLICES, scope_filters


def _matches(query: dict[str, object], value: int) -> bool:
    bounds = query["phash_i64"]
    assert isinstance(bounds, dict)
    return bool(bounds["$gte"] <= value and ("$lt" not in bounds or value < bounds["$lt"]))


def test_a_whole_portal_is_read_in_slices_that_hold_every_hash_once() -> None:
    queries = scope_filters("p", Scope())

    assert len(queries) == HASH_SLICES
    assert all(q["portal_id"] == "p" and q["state"] == "hashed" for q in queries)
    extremes = [-(2**63), -(2**63) + 1, -1, 0, 1, 2**63 - 1]
    randoms = np.random.default_rng(3).integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64)
    for value in [*extremes, *randoms.tolist()]:
        assert sum(_matches(q, value) for q in queries) == 1, value


def test_a_scope_with_criteria_or_ids_is_not_sliced() -> None:
    (tagged,) = scope_filters("p", Scope(tags_all=["a"]))
    ids = scope_filters("p", Scope(asset_ids=[f"a{n}" for n in range(250)]))

    assert "phash_i64" not in tagged and tagged["tags"] == {"$all": ["a"]}
    assert len(ids) == 3 and all("phash_i64" not in q for q in ids)
    assert scope_filters("p", Scope(asset_ids=[])) == []
