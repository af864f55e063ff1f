"""`dupfinder dead-letters`: see why messages died, re-drive them once fixed, purge the rest."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.contract import ASSETS_QUEUE
from schemas.envelope import build_envelope
from schemas.messages import AssetUploaded
from tests.cli import dupfinder
from tests.harness import Harness, amqp_connection
from tests.images import photo, write


def dead_letters(*args: str) -> subprocess.CompletedProcess[str]:
    return dupfinder("dead-letters", *args, timeout=60)


def listed(portal: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """Poll `list --json` until `count` dead letters of `portal` are there."""
    deadline = time.monotonic() + timeout
    while True:
        result = dead_letters("list", "--queue", "assets", "--portal", portal, "--json")
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_a_missing_source_is_re_driven_once_the_file_appears(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given an upload that died because its file was not there yet
    path = images / "late.png"
    message_id = harness.upload(portal, "late", path)
    harness.wait_for(portal, "asset.failed")

    (row,) = listed(portal, 1)
    assert (row["message_id"], row["actor"], row["subject"]) == (
        message_id,
        "asset_uploaded",
        "asset_id=late",
    )
    assert row["reason"].startswith("source_not_found: no file at")
    assert 6 * 86400 < row["expires_in_s"] <= 7 * 86400

    # When the file appears and ops re-drive the dead letters of that portal
    write(path, photo(110))
    result = dead_letters("redrive", "--queue", "assets", "--portal", portal)
    assert result.returncode == 0, result.stderr
    assert "re-drove 1 of 1" in result.stdout

    # Then the upload is hashed and the dead letter is gone
    (event,) = harness.wait_for(portal, "asset.hashed")
    assert event["asset_id"] == "late"
    assert listed(portal, 0, timeout=0) == []
    doc = harness.asset(portal, "late")
    assert doc is not None and doc["state"] == "hashed"


def test_reasons_are_told_and_purge_deletes_only_what_matches(
    harness: Harness, portal: str, images: Path
) -> None:
    bad = build_envelope(
        AssetUploaded(
            portal_id=portal,
            asset_id="bad",
            source="/x.png",
            uploaded_at="2024-01-01T00:00:00Z",
        )
    )
    bad["args"][0]["tags"] = "oops"
    harness.send_raw(ASSETS_QUEUE, json.dumps(bad).encode())
    harness.upload(portal, "gone", images / "gone.png")

    rows = listed(portal, 2)
    reasons = {row["subject"]: row["reason"] for row in rows}
    assert reasons["asset_id=bad"].startswith("invalid_message: tags")
    assert reasons["asset_id=gone"].startswith("source_not_found")

    refused = dead_letters("purge", "--queue", "assets", "--portal", portal)
    assert refused.returncode == 2  # no terminal and no --yes: nothing is deleted

    result = dead_letters(
        "purge", "--queue", "assets", "--portal", portal, "--reason", "invalid_message", "--yes"
    )
    assert result.returncode == 0, result.stderr
    assert "purged 1 of 1" in result.stdout
    assert [row["subject"] for row in listed(portal, 1)] == ["asset_id=gone"]


def test_show_prints_the_envelope(harness: Harness, portal: str, images: Path) -> None:
    message_id = harness.upload(portal, "gone", images / "gone.png")
    listed(portal, 1)
    result = dead_letters("show", "--queue", "assets", "--id", message_id)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["envelope"]["args"][0]["asset_id"] == "gone"
    assert dead_letters("show", "--queue", "assets", "--id", uuid.uuid4().hex).returncode == 1
    assert dead_letters("list", "--queue", "nope").returncode == 2


def test_status_reports_queues_and_portal_counts(
    harness: Harness, portal: str, images: Path
) -> None:
    harness.upload(portal, "good", write(images / "good.png", photo(111)))
    (images / "bad.png").write_bytes(b"junk")
    harness.upload(portal, "bad", images / "bad.png")
    harness.wait_for(portal, ("asset.hashed", "asset.failed"), count=2)

    result = dupfinder("status", "--portal", portal, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["portals"] == {
        portal: {"hashed": 1, "pending": 0, "deleted": 0, "failed": {"unreadable_image": 1}}
    }
    assert set(report["queues"]) == {
        "dupfinder.assets",
        "dupfinder.backfill",
        "dupfinder.commands",
        "dupfinder.searches",
    }
    assets = report["queues"]["dupfinder.assets"]
    assert assets["consumers"] >= 1
    # The management API (enabled by ./dev test) tells what workers hold unacknowledged
    assert isinstance(assets["unacked"], int)

    table = dupfinder("status", "--portal", portal)
    assert table.returncode == 0 and "unreadable_image 1" in table.stdout


def test_tenant_text_cannot_drive_the_operators_terminal(harness: Harness, portal: str) -> None:
    # Given a dead letter whose portal id clears the screen and retitles the terminal (refused
    # by the contract, so it is dead-lettered), and a stored asset of such a portal from before
    hostile = f"{portal}\x1b[2J\x1b]0;pwned\x07\u202e"
    body = build_envelope(
        AssetUploaded.model_construct(
            portal_id=hostile,
            asset_id="a\r\x1b[1A",
            source="/x.png",
            uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    harness.send_raw(ASSETS_QUEUE, json.dumps(body).encode())
    harness.db.assets.insert_one({"portal_id": hostile, "asset_id": "old", "state": "hashed"})

    # When an operator lists dead letters and the status
    deadline = time.monotonic() + 20
    listing = dead_letters("list", "--queue", "assets")
    while portal not in listing.stdout and time.monotonic() < deadline:
        time.sleep(0.3)
        listing = dead_letters("list", "--queue", "assets")
    status = dupfinder("status")

    # Then every such character is shown as an escape, never sent to the terminal
    for result in (listing, status):
        assert result.returncode in (0, 1), result.stderr
        shown = result.stdout + result.stderr
        assert portal in shown
        assert not any(c in shown for c in "\x1b\x07\r\u202e"), shown
        assert "\\x1b[2J" in shown


def test_dead_letters_carry_their_cause_in_headers(harness: Harness, portal: str) -> None:
    # Given an invalid payload, a body that is not JSON, and an upload whose file is missing
    invalid = build_envelope(
        AssetUploaded.model_construct(
            portal_id=portal, asset_id="a1", source="relative.png", uploaded_at=datetime.now(UTC)
        )
    )
    harness.send_raw(ASSETS_QUEUE, json.dumps(invalid).encode())
    harness.send_raw(ASSETS_QUEUE, b"\xff not json " + portal.encode())
    missing = harness.upload(portal, "gone", f"/nonexistent/{portal}.png")

    # Then each reaches the XQ with headers that say why, for any AMQP tool to show
    causes: dict[str, tuple[Any, Any]] = {}
    channel = amqp_connection().channel()
    deadline = time.monotonic() + 20
    while len(causes) < 3 and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(f"{ASSETS_QUEUE}.XQ", auto_ack=False)
        if method is None:
            time.sleep(0.2)
            continue
        headers = properties.headers or {}
        key = invalid["message_id"] if invalid["message_id"].encode() in body else None
        key = key or (missing if missing.encode() in body else None)
        key = key or ("undecodable" if portal.encode() in body else None)
        if key is not None:
            causes[key] = (headers.get("x-dupfinder-reason"), headers.get("x-dupfinder-detail"))
    channel.connection.close()  # unacknowledged: they stay in the XQ
    assert causes[invalid["message_id"]][0] == "invalid_message"
    assert "source" in causes[invalid["message_id"]][1]
    assert causes["undecodable"][0] == "malformed_envelope"
    assert causes[missing][0] == "source_not_found"

    # And the listing tells the same cause
    rows = listed(portal, 1)
    assert any(r["reason"].startswith("source_not_found: no file at") for r in rows), rows
