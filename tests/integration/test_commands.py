"""Act on duplicates: make-original and delete-duplicates, once each, never across portals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.contract import COMMANDS_QUEUE
from schemas.envelope import build_envelope
from schemas.messages import DeleteDuplicates, FindDuplicates, MakeOriginal
from tests.commands import clashing_commands
from tests.harness import Harness
from tests.images import RETINA_INSIDE_PIXELS, photo, retina_and_its_captioned_copy, write

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def trio(harness: Harness, portal: str, images: Path) -> list[str]:
    """Three identical copies: a1 is the original (earliest), a2 and a3 duplicates."""
    path = write(images / "p.png", photo(60))
    for n in (1, 2, 3):
        harness.upload(portal, f"a{n}", path, uploaded_at=T0 + timedelta(days=n))
    harness.wait_for(portal, "asset.hashed", count=3)
    return ["a1", "a2", "a3"]


def members(harness: Harness, portal: str, request_id: str) -> list[str]:
    harness.send(FindDuplicates(request_id=request_id, portal_id=portal))
    (page,) = harness.wait_for(portal, "duplicates.found", lambda e: e["request_id"] == request_id)
    return [a["asset_id"] for s in page["sets"] for a in s["assets"]]


def test_make_original_changes_the_sets_original(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    assert members(harness, portal, "before")[0] == "a1"

    harness.send(MakeOriginal(command_id="c1", portal_id=portal, asset_id="a3"))

    (event,) = harness.wait_for(portal, "original.changed")
    assert event == {
        "_type": "original.changed",
        "command_id": "c1",
        "portal_id": portal,
        "asset_id": "a3",
    }
    assert members(harness, portal, "after") == ["a3", "a2", "a1"]


def test_the_latest_pin_wins(harness: Harness, portal: str, trio: list[str]) -> None:
    harness.send(MakeOriginal(command_id="c1", portal_id=portal, asset_id="a2"))
    harness.wait_for(portal, "original.changed")
    harness.send(MakeOriginal(command_id="c2", portal_id=portal, asset_id="a3"))
    harness.wait_for(portal, "original.changed", count=2)

    assert members(harness, portal, "r")[0] == "a3"


def test_the_latest_pin_carried_out_wins_whatever_the_publishers_clock_says(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    # Given a pin stamped at the epoch, then one stamped now, then one stamped in between
    def pin(command_id: str, asset_id: str, stamp_ms: int) -> None:
        body = build_envelope(
            MakeOriginal(command_id=command_id, portal_id=portal, asset_id=asset_id)
        )
        body["message_timestamp"] = stamp_ms
        harness.send_raw(COMMANDS_QUEUE, json.dumps(body).encode())
        harness.wait_for(portal, "original.changed", lambda e: e["command_id"] == command_id)

    pin("c1", "a2", 0)
    assert members(harness, portal, "r1")[0] == "a2"
    pin("c2", "a3", int(time.time() * 1000))
    assert members(harness, portal, "r2")[0] == "a3"
    pin("c3", "a2", 1000)
    # Then each "original.changed" is true: the latest one carried out decides
    assert members(harness, portal, "r3")[0] == "a2"


def test_make_original_of_unknown_or_foreign_assets_is_rejected_alike(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    other = portal + "-other"
    harness.send(MakeOriginal(command_id="c1", portal_id=other, asset_id="a3"))
    harness.send(MakeOriginal(command_id="c2", portal_id=other, asset_id="nope"))

    foreign, unknown = sorted(
        harness.wait_for(other, "command.rejected", count=2), key=lambda e: e["command_id"]
    )
    # The answer for another portal's asset is exactly the answer for an id that does not exist
    assert {k: v for k, v in foreign.items() if k != "command_id"} == {
        k: v.replace("nope", "a3") for k, v in unknown.items() if k != "command_id"
    }
    assert foreign["reason"] == "asset_not_found"
    assert members(harness, portal, "r")[0] == "a1"


def test_delete_removes_duplicates_and_keeps_a_tombstone(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    harness.send(
        DeleteDuplicates(command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a2"])
    )

    (event,) = harness.wait_for(portal, "duplicates.deleted")
    assert (event["deleted"], event["rejected"], event["original_id"]) == (["a2"], [], "a1")
    assert members(harness, portal, "r") == ["a1", "a3"]
    tomb = harness.asset(portal, "a2")
    assert tomb is not None and tomb["state"] == "deleted"
    assert tomb["deleted"]["command_id"] == "d1"
    assert tomb["deleted"]["original_id"] == "a1"
    assert tomb["phash"] and tomb["uploaded_at"] == T0 + timedelta(days=2)  # metadata kept


def test_searches_before_and_after_a_delete_and_an_upload_each_see_the_portal_as_it_is(
    harness: Harness, portal: str, trio: list[str], images: Path
) -> None:
    # Given a search that read the portal's columns (and left them in the worker's cache)
    assert members(harness, portal, "r1") == ["a1", "a3", "a2"]  # newest copies first

    # When a copy is deleted, then another uploaded
    harness.send(
        DeleteDuplicates(command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a3"])
    )
    harness.wait_for(portal, "duplicates.deleted")
    assert members(harness, portal, "r2") == ["a1", "a2"]
    harness.upload(portal, "a4", images / "p.png", uploaded_at=T0 + timedelta(days=4))
    harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] == "a4")

    # Then each search answers with the portal as it is then
    assert members(harness, portal, "r3") == ["a1", "a4", "a2"]


def test_delete_all_duplicates_leaves_no_set(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    harness.send(
        DeleteDuplicates(
            command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a2", "a3"]
        )
    )
    (event,) = harness.wait_for(portal, "duplicates.deleted")
    assert event["deleted"] == ["a2", "a3"]
    assert members(harness, portal, "r") == []


def test_delete_refuses_originals_strangers_and_non_duplicates(
    harness: Harness, portal: str, trio: list[str], images: Path
) -> None:
    harness.upload(portal, "far", write(images / "far.png", photo(61)))
    harness.wait_for(portal, "asset.hashed", count=4)
    other = portal + "-other"
    harness.upload(other, "theirs", write(images / "theirs.png", photo(60)))
    harness.wait_for(other, "asset.hashed")

    harness.send(
        DeleteDuplicates(
            command_id="d1",
            portal_id=portal,
            original_id="a2",
            asset_ids=["a2", "a1", "far", "theirs", "ghost", "a3"],
        )
    )

    (event,) = harness.wait_for(portal, "duplicates.deleted")
    assert event["deleted"] == ["a3"]
    assert event["rejected"] == [
        {"asset_id": "a2", "reason": "is_original"},
        {"asset_id": "a1", "reason": "is_original"},  # outranks a2: it is the set's original
        {"asset_id": "far", "reason": "not_a_duplicate"},
        {"asset_id": "theirs", "reason": "not_found"},  # another portal's asset: unknown here
        {"asset_id": "ghost", "reason": "not_found"},
    ]
    theirs = harness.asset(other, "theirs")
    assert theirs is not None and theirs["state"] == "hashed"


def test_deleting_an_already_deleted_asset_is_not_an_error(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    harness.send(
        DeleteDuplicates(command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a2"])
    )
    harness.wait_for(portal, "duplicates.deleted")
    harness.send(
        DeleteDuplicates(
            command_id="d2", portal_id=portal, original_id="a1", asset_ids=["a2", "a3"]
        )
    )
    second = harness.wait_for(portal, "duplicates.deleted", lambda e: e["command_id"] == "d2")
    assert (second[0]["deleted"], second[0]["rejected"]) == (["a2", "a3"], [])


def test_delete_with_an_unknown_original_is_rejected(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    harness.send(
        DeleteDuplicates(command_id="d1", portal_id=portal, original_id="ghost", asset_ids=["a2"])
    )
    (event,) = harness.wait_for(portal, "command.rejected")
    assert event["reason"] == "original_not_found"
    assert members(harness, portal, "r") == ["a1", "a3", "a2"]


def test_a_pinned_asset_cannot_be_deleted_from_a_stale_screen(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    # Someone makes a3 the original while another user's screen still shows a1 as original
    harness.send(MakeOriginal(command_id="m1", portal_id=portal, asset_id="a3"))
    harness.wait_for(portal, "original.changed")
    harness.send(
        DeleteDuplicates(
            command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a3", "a2"]
        )
    )

    (event,) = harness.wait_for(portal, "duplicates.deleted")
    assert event["deleted"] == ["a2"]
    assert event["rejected"] == [{"asset_id": "a3", "reason": "is_original"}]


def test_a_deleted_asset_cannot_become_original(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    harness.send(
        DeleteDuplicates(command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a2"])
    )
    harness.wait_for(portal, "duplicates.deleted")
    harness.send(MakeOriginal(command_id="m1", portal_id=portal, asset_id="a2"))
    (event,) = harness.wait_for(portal, "command.rejected")
    assert event["reason"] == "asset_not_found"


def test_a_replayed_command_changes_nothing_and_republishes_its_outcome(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    delete = DeleteDuplicates(command_id="d1", portal_id=portal, original_id="a1", asset_ids=["a2"])
    harness.send(delete)
    (first,) = harness.wait_for(portal, "duplicates.deleted")
    harness.send(MakeOriginal(command_id="m1", portal_id=portal, asset_id="a3"))
    harness.wait_for(portal, "original.changed")
    pinned = harness.asset(portal, "a3")

    # When both commands are replayed (new message ids, same command ids)
    harness.send(delete)
    harness.send(MakeOriginal(command_id="m1", portal_id=portal, asset_id="a3"))

    # Then the first outcomes are re-published and nothing changes
    deleted = harness.wait_for(portal, "duplicates.deleted", count=2)
    changed = harness.wait_for(portal, "original.changed", count=2)
    assert deleted[1] == first
    assert changed[0] == changed[1]
    assert harness.asset(portal, "a3") == pinned
    assert harness.db.commands.count_documents({"portal_id": portal}) == 2


def test_removal_by_another_portal_leaves_the_asset_alone(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    from schemas.messages import AssetRemoved

    other = portal + "-other"
    harness.send(AssetRemoved(portal_id=other, asset_id="a1"))
    harness.send(
        DeleteDuplicates(command_id="d1", portal_id=other, original_id="a2", asset_ids=["a1"])
    )
    harness.wait_for(other, "command.rejected")
    assert members(harness, portal, "r") == ["a1", "a3", "a2"]
    mine = harness.asset(portal, "a1")
    assert mine is not None and mine["state"] == "hashed"


def test_conflicting_commands_leave_exactly_one_live_original(
    harness: Harness, portal: str, trio: list[str]
) -> None:
    # Many users click "make original" and "delete" on the same set at once
    commands = clashing_commands(portal, "a1", "a2", "a3", rounds=15)
    for command in commands:
        harness.send(command)
    outcomes = harness.wait_for(
        portal,
        ("original.changed", "duplicates.deleted", "command.rejected"),
        count=len(commands),
        timeout=60,
    )

    # Every command was answered once
    assert sorted(e["command_id"] for e in outcomes) == sorted(c.command_id for c in commands)
    for event in outcomes:
        if event["_type"] == "duplicates.deleted":
            assert event["original_id"] not in event["deleted"]
    # The set never lost its original: some asset survives, and if more than one does, the one
    # pinned last leads the set
    live = list(harness.db.assets.find({"portal_id": portal, "state": "hashed"}))
    assert live, "every asset of the set was deleted"
    shown = members(harness, portal, "after")
    if len(live) == 1:
        assert shown == []
    else:
        latest_pin = max(live, key=lambda d: d.get("pinned_at") or datetime.min.replace(tzinfo=UTC))
        assert shown[0] == latest_pin["asset_id"]
        assert sorted(shown) == sorted(d["asset_id"] for d in live)


def test_delete_checks_the_rule_the_sets_were_found_with(
    harness: Harness, portal: str, images: Path
) -> None:
    from PIL import Image

    base = photo(62, size=(640, 480))
    harness.upload(portal, "base", write(images / "base.png", base), uploaded_at=T0)
    mirrored = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for n in (1, 2):
        harness.upload(portal, f"m{n}", write(images / f"m{n}.png", mirrored))
    harness.wait_for(portal, "asset.hashed", count=3)

    for command_id, asset_id, match, radius in (
        ("d1", "m1", "phash", 10),
        ("d2", "m2", "verified", None),  # a radius belongs to the phash rule only
    ):
        harness.send(
            DeleteDuplicates(
                command_id=command_id,
                portal_id=portal,
                original_id="base",
                asset_ids=[asset_id],
                match=match,
                max_distance=radius,
            )
        )
    events = {e["command_id"]: e for e in harness.wait_for(portal, "duplicates.deleted", count=2)}

    # A mirror is 30-odd bits from its original: not a duplicate under pHash, confirmed as one
    # under the verified rule.
    assert events["d1"]["rejected"] == [{"asset_id": "m1", "reason": "not_a_duplicate"}]
    assert events["d2"]["deleted"] == ["m2"]


def test_a_photograph_with_a_thin_even_rim_is_not_deleted_as_its_captioned_copys_duplicate(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a photograph whose own dark rim is an even border, stored as before the ranking rule
    # (only the inside counted), and a captioned copy of it uploaded later
    retina, captioned = retina_and_its_captioned_copy(images)
    harness.upload(portal, "retina", retina)
    harness.upload(portal, "captioned", captioned, uploaded_at=T0 + timedelta(days=1))
    harness.wait_for(portal, "asset.hashed", count=2)
    harness.db.assets.update_one(
        {"portal_id": portal, "asset_id": "retina"},
        {"$set": {"pixels": RETINA_INSIDE_PIXELS, "uploaded_at": T0}},
    )

    # When a stale screen asks to delete the photograph as the captioned copy's duplicate
    harness.send(
        DeleteDuplicates(
            command_id="d1",
            portal_id=portal,
            original_id="captioned",
            asset_ids=["retina"],
            match="verified",
        )
    )

    # Then the photograph is refused as the set's original: the rim counts as picture
    (event,) = harness.wait_for(portal, "duplicates.deleted")
    assert event["deleted"] == []
    assert event["rejected"] == [{"asset_id": "retina", "reason": "is_original"}]
