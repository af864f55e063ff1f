"""Review decisions end to end: "not duplicates", "keep all", forgetting them, deleting with a
merge, and originals that say why, through real RabbitMQ and the MongoDB-protocol server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.contract import BACKFILL_ROUTE
from schemas.messages import (
    AssetRemoved,
    AssetUploaded,
    DeleteDuplicates,
    FindDuplicates,
    ForgetDecisions,
    KeepSet,
    MarkDistinct,
    MatchRule,
    Merge,
)
from tests.cli import dupfinder
from tests.harness import Harness
from tests.images import photo, write

T0 = datetime(2024, 1, 1, tzinfo=UTC)
RULES: list[tuple[MatchRule, int | None]] = [("verified", None), ("phash", 0), ("phash", 10)]


@pytest.fixture
def quartet(harness: Harness, portal: str, images: Path) -> Path:
    """Four copies of one picture, a1 the earliest (so the original), and one unrelated b1."""
    path = write(images / "p.png", photo(70))
    for n in (1, 2, 3, 4):
        harness.upload(
            portal,
            f"a{n}",
            path,
            uploaded_at=T0 + timedelta(days=n),
            title=f"copy {n}" + " (web)" * (n == 3),
            description=f"line {n}\nshared line",
            tags=["sea", f"t{n}"],
        )
    harness.upload(portal, "b1", write(images / "b.png", photo(71)), uploaded_at=T0)
    harness.wait_for(portal, "asset.hashed", count=5)
    return path


def find(harness: Harness, portal: str, request_id: str, **fields: Any) -> list[dict[str, Any]]:
    """The sets of one search, oldest uploads first."""
    fields.setdefault("sort", {"field": "uploaded_at", "order": "asc"})
    harness.send(FindDuplicates(request_id=request_id, portal_id=portal, **fields))

    def answers(e: dict[str, Any]) -> bool:
        return bool(e["request_id"] == request_id)

    first = harness.wait_for(portal, "duplicates.found", answers)[0]
    found = harness.wait_for(portal, "duplicates.found", answers, count=first["pages"])
    return [s for page in sorted(found, key=lambda p: p["page"]) for s in page["sets"]]


def ids(sets: list[dict[str, Any]]) -> list[list[str]]:
    return [[a["asset_id"] for a in s["assets"]] for s in sets]


def answer(harness: Harness, portal: str, kind: str, command_id: str) -> dict[str, Any]:
    (event,) = harness.wait_for(portal, kind, lambda e: e["command_id"] == command_id)
    return event


def rule_fields(match: MatchRule, radius: int | None) -> dict[str, Any]:
    return {"match": match} if radius is None else {"match": match, "max_distance": radius}


def test_not_duplicates_holds_under_every_rule_and_after_replays_backfills_and_rehash(
    harness: Harness, portal: str, quartet: Path
) -> None:
    assert ids(find(harness, portal, "before")) == [["a1", "a2", "a3", "a4"]]

    harness.send(MarkDistinct(command_id="d1", portal_id=portal, asset_ids=["a1", "a2"]))

    event = answer(harness, portal, "distinct.marked", "d1")
    assert event["decisions"] == [{"asset_ids": ["a1", "a2"], "rejected": []}]

    def check(tag: str) -> None:
        for n, (match, radius) in enumerate(RULES):
            sets = ids(find(harness, portal, f"{tag}-{n}", **rule_fields(match, radius)))
            # a2 is no copy of a1 any more; a1 keeps the rest, a2 has no set left to lead
            assert sets == [["a1", "a3", "a4"]], (match, radius, sets)

    check("after")
    # Given every way the hashes are made again: a replayed upload, a backfill and a rehash
    harness.upload(portal, "a2", quartet, uploaded_at=T0 + timedelta(days=2))
    harness.publisher.publish(
        AssetUploaded(portal_id=portal, asset_id="a1", source=str(quartet), uploaded_at=T0),
        route=BACKFILL_ROUTE,
    )
    harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] in ("a1", "a2"), count=4)
    from worker.core.hashing import HASH_VERSION

    harness.db.assets.update_many(
        {"portal_id": portal}, {"$set": {"hash_provenance.version": HASH_VERSION - 1}}
    )
    result = dupfinder("rehash", "--portal", portal)
    assert result.returncode == 0, result.stderr
    harness.wait_for(portal, "asset.hashed", count=5 + 2 + 5)
    check("replayed")


def test_distinct_members_may_still_form_a_set_of_their_own(
    harness: Harness, portal: str, quartet: Path
) -> None:
    harness.send(MarkDistinct(command_id="d1", portal_id=portal, asset_ids=["a1", "a2", "a3"]))
    answer(harness, portal, "distinct.marked", "d1")
    harness.send(MarkDistinct(command_id="d2", portal_id=portal, asset_ids=["a1", "a4"]))
    answer(harness, portal, "distinct.marked", "d2")

    # a1 takes no one; a2 leads next and takes a4 (a2-a3 apart); a3 is left alone
    assert ids(find(harness, portal, "r")) == [["a2", "a4"]]


def test_keep_all_hides_the_set_until_a_new_copy_joins_it(
    harness: Harness, portal: str, quartet: Path, images: Path
) -> None:
    harness.send(KeepSet(command_id="k1", portal_id=portal, asset_ids=["a1", "a2", "a3", "a4"]))
    event = answer(harness, portal, "set.kept", "k1")
    assert event["decisions"] == [{"asset_ids": ["a1", "a2", "a3", "a4"], "rejected": []}]

    assert find(harness, portal, "hidden") == []
    (shown,) = find(harness, portal, "reviewer", include_kept=True)
    assert shown["kept"] is True and shown["reopened"] is False
    assert ids([shown]) == [["a1", "a2", "a3", "a4"]]

    # When a later upload joins the set, it comes back with the newcomer flagged
    harness.upload(portal, "a5", quartet, uploaded_at=T0 + timedelta(days=9))
    harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] == "a5")
    (reopened,) = find(harness, portal, "again")
    assert reopened["reopened"] is True and reopened["kept"] is False
    assert {a["asset_id"]: a["new"] for a in reopened["assets"]} == {
        "a1": False,
        "a2": False,
        "a3": False,
        "a4": False,
        "a5": True,
    }


def test_forget_decisions_brings_the_sets_back(
    harness: Harness, portal: str, quartet: Path
) -> None:
    harness.send(KeepSet(command_id="k1", portal_id=portal, asset_ids=["a1", "a2", "a3", "a4"]))
    harness.send(MarkDistinct(command_id="d1", portal_id=portal, asset_ids=["a1", "b1"]))
    harness.send(MarkDistinct(command_id="d2", portal_id=portal, asset_ids=["a3", "a4"]))
    # Commands of one portal never interleave, but they may be carried out in any order
    answer(harness, portal, "set.kept", "k1")
    answer(harness, portal, "distinct.marked", "d1")
    answer(harness, portal, "distinct.marked", "d2")
    assert find(harness, portal, "hidden") == []

    harness.send(ForgetDecisions(command_id="f1", portal_id=portal, asset_ids=["a2", "nope"]))

    event = answer(harness, portal, "decisions.forgotten", "f1")
    assert (event["asset_ids"], event["forgotten"]) == (["a2"], 1)  # only the keep named a2
    assert event["rejected"] == [{"asset_id": "nope", "reason": "not_found"}]
    assert ids(find(harness, portal, "back")) == [["a1", "a2", "a3"]]  # a3-a4 stay apart

    harness.send(ForgetDecisions(command_id="f2", portal_id=portal, asset_ids=["a4", "b1"]))
    assert answer(harness, portal, "decisions.forgotten", "f2")["forgotten"] == 2
    assert ids(find(harness, portal, "all")) == [["a1", "a2", "a3", "a4"]]


def test_decisions_never_cross_portals(harness: Harness, portal: str, quartet: Path) -> None:
    other = portal + "-x"
    harness.send(MarkDistinct(command_id="d1", portal_id=other, asset_ids=["a1", "a2"]))
    harness.send(KeepSet(command_id="k1", portal_id=other, asset_ids=["a1", "a2", "a3", "a4"]))
    harness.send(ForgetDecisions(command_id="f1", portal_id=other, asset_ids=["a1"]))
    # The other portal hears of unknown ids, exactly as of ids that exist nowhere
    unknown = [{"asset_id": a, "reason": "not_found"} for a in ("a1", "a2")]
    assert answer(harness, other, "distinct.marked", "d1")["decisions"] == [
        {"asset_ids": [], "rejected": unknown}
    ]
    kept = answer(harness, other, "set.kept", "k1")["decisions"]
    assert kept[0]["asset_ids"] == [] and len(kept[0]["rejected"]) == 4
    forgot = answer(harness, other, "decisions.forgotten", "f1")
    assert (forgot["asset_ids"], forgot["forgotten"]) == ([], 0)
    assert harness.db.decisions.count_documents({"portal_id": other}) == 0

    # And this portal's sets are as they were
    assert ids(find(harness, portal, "r")) == [["a1", "a2", "a3", "a4"]]
    # A decision of this portal is not forgotten by another's command naming the same ids
    harness.send(KeepSet(command_id="k2", portal_id=portal, asset_ids=["a1", "a2", "a3", "a4"]))
    answer(harness, portal, "set.kept", "k2")
    harness.send(ForgetDecisions(command_id="f2", portal_id=other, asset_ids=["a1"]))
    answer(harness, other, "decisions.forgotten", "f2")
    assert find(harness, portal, "still-kept") == []


def test_a_decision_is_carried_out_once_per_command_id(
    harness: Harness, portal: str, quartet: Path
) -> None:
    command = KeepSet(command_id="k1", portal_id=portal, sets=[["a1", "a2"], ["a3", "b1"]])
    harness.send(command)
    harness.send(command)

    first, second = harness.wait_for(portal, "set.kept", count=2)
    assert first == second
    assert [d["asset_ids"] for d in first["decisions"]] == [["a1", "a2"], ["a3", "b1"]]
    assert harness.db.decisions.count_documents({"portal_id": portal}) == 2


def test_bulk_review_many_sets_in_one_command(harness: Harness, portal: str, images: Path) -> None:
    # Given 30 pairs of copies
    for n in range(30):
        path = write(images / f"{n}.png", photo(300 + n))
        for copy in "xy":
            harness.upload(portal, f"{copy}{n}", path, uploaded_at=T0 + timedelta(hours=n))
    harness.wait_for(portal, "asset.hashed", count=60, timeout=60)
    assert len(find(harness, portal, "before")) == 30

    pairs = [[f"x{n}", f"y{n}"] for n in range(30)]
    harness.send(MarkDistinct(command_id="bulk-1", portal_id=portal, sets=pairs[:20]))
    harness.send(KeepSet(command_id="bulk-2", portal_id=portal, sets=pairs[20:]))
    answer(harness, portal, "distinct.marked", "bulk-1")
    answer(harness, portal, "set.kept", "bulk-2")

    assert find(harness, portal, "after") == []
    assert len(find(harness, portal, "reviewer", include_kept=True)) == 10


def test_delete_refuses_an_asset_marked_distinct_from_the_original(
    harness: Harness, portal: str, quartet: Path
) -> None:
    harness.send(MarkDistinct(command_id="d1", portal_id=portal, asset_ids=["a1", "a2"]))
    answer(harness, portal, "distinct.marked", "d1")

    harness.send(
        DeleteDuplicates(
            command_id="x1", portal_id=portal, original_id="a1", asset_ids=["a2", "a3"]
        )
    )

    event = answer(harness, portal, "duplicates.deleted", "x1")
    assert event["deleted"] == ["a3"]
    assert event["rejected"] == [{"asset_id": "a2", "reason": "distinct"}]


def test_delete_with_merge_gives_the_original_what_the_copies_had(
    harness: Harness, portal: str, quartet: Path
) -> None:
    harness.send(
        DeleteDuplicates(
            command_id="x1",
            portal_id=portal,
            original_id="a1",
            asset_ids=["a3", "a2"],
            merge=Merge(tags="union", description="append", title="longest"),
        )
    )

    event = answer(harness, portal, "duplicates.deleted", "x1")
    merged = {
        "asset_id": "a1",
        "title": "copy 3 (web)",
        "description": "line 1\nshared line\nline 3\nline 2",
        "tags": ["sea", "t1", "t3", "t2"],
    }
    assert event["original"] == merged
    stored = harness.asset(portal, "a1")
    assert stored is not None
    assert {k: stored[k] for k in ("title", "description", "tags")} == {
        k: merged[k] for k in ("title", "description", "tags")
    }
    (shown,) = find(harness, portal, "r")
    assert shown["assets"][0]["title"] == "copy 3 (web)"
    # Each deleted asset keeps its own metadata in its tombstone
    tomb = harness.asset(portal, "a2")
    assert tomb is not None and tomb["state"] == "deleted"
    assert (tomb["title"], tomb["tags"]) == ("copy 2", ["sea", "t2"])


def test_delete_without_merge_reports_the_original_unchanged(
    harness: Harness, portal: str, quartet: Path
) -> None:
    harness.send(
        DeleteDuplicates(command_id="x1", portal_id=portal, original_id="a1", asset_ids=["a2"])
    )
    event = answer(harness, portal, "duplicates.deleted", "x1")
    assert event["original"] == {
        "asset_id": "a1",
        "title": "copy 1",
        "description": "line 1\nshared line",
        "tags": ["sea", "t1"],
    }


def test_deleted_and_removed_assets_leave_their_decisions(
    harness: Harness, portal: str, quartet: Path
) -> None:
    harness.send(KeepSet(command_id="k1", portal_id=portal, asset_ids=["a1", "a2", "a3"]))
    harness.send(MarkDistinct(command_id="d1", portal_id=portal, asset_ids=["a4", "b1"]))
    answer(harness, portal, "set.kept", "k1")
    answer(harness, portal, "distinct.marked", "d1")

    harness.send(
        DeleteDuplicates(command_id="x1", portal_id=portal, original_id="a1", asset_ids=["a3"])
    )
    answer(harness, portal, "duplicates.deleted", "x1")
    harness.send(AssetRemoved(portal_id=portal, asset_id="b1"))
    harness.wait_for(portal, "asset.removed")

    decisions = {
        d["decision_id"]: d["asset_ids"]
        for d in harness.db.decisions.find({"portal_id": portal}, {"_id": 0})
    }
    # a3 left the keep decision; the distinct decision, left naming a4 alone, is gone
    assert decisions == {"k1/0": ["a1", "a2"]}


def test_every_original_says_why_it_is_the_original(
    harness: Harness, portal: str, images: Path
) -> None:
    big, small = (
        write(images / "big.png", photo(80, (800, 600))),
        write(images / "small.png", photo(80, (400, 300))),
    )
    harness.upload(portal, "p1", small, uploaded_at=T0)
    harness.upload(portal, "p2", big, uploaded_at=T0 + timedelta(days=1))
    harness.upload(portal, "q1", write(images / "q.png", photo(81)), uploaded_at=T0)
    harness.upload(portal, "q2", images / "q.png", uploaded_at=T0 + timedelta(days=1))
    harness.upload(portal, "r2", write(images / "r.png", photo(82)), uploaded_at=T0)
    harness.upload(portal, "r1", images / "r.png", uploaded_at=T0)
    harness.wait_for(portal, "asset.hashed", count=6)

    sets = find(harness, portal, "r", sort={"field": "title", "order": "asc"})
    reasons = {s["set_id"]: [a["original_reason"] for a in s["assets"]] for s in sets}
    assert reasons == {
        "p2": ["most_pixels", None],
        "q1": ["earliest_upload", None],
        "r1": ["smallest_id", None],
    }

    from schemas.messages import MakeOriginal

    harness.send(MakeOriginal(command_id="m1", portal_id=portal, asset_id="q2"))
    harness.wait_for(portal, "original.changed")
    sets = find(harness, portal, "r2")
    assert {s["set_id"]: s["assets"][0]["original_reason"] for s in sets} == {
        "p2": "most_pixels",
        "q2": "pinned",
        "r1": "smallest_id",
    }


def test_a_decision_of_one_id_is_refused_with_a_clear_reason(harness: Harness, portal: str) -> None:
    from schemas.contract import COMMANDS_QUEUE
    from schemas.envelope import build_envelope

    body = build_envelope(KeepSet(command_id="k1", portal_id=portal, asset_ids=["a", "b"]))
    body["args"][0]["asset_ids"] = ["a"]
    import json

    harness.send_raw(COMMANDS_QUEUE, json.dumps(body).encode())

    (event,) = harness.wait_for(portal, "command.rejected")
    assert event["reason"] == "invalid_message"
    assert "asset_ids" in event["detail"] and "at least 2" in event["detail"]
