"""Bad input gets a clear, specific error and loses nothing, and never blocks the queue."""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from schemas.contract import ASSETS_QUEUE, COMMANDS_QUEUE, SEARCHES_QUEUE
from schemas.envelope import build_envelope
from schemas.messages import AssetUploaded
from tests.harness import Harness
from tests.images import encode, photo, write


def envelope(portal: str, asset_id: str, source: str, **changes: Any) -> dict[str, Any]:
    """A valid asset_uploaded envelope with `changes` applied on top."""
    body = build_envelope(
        AssetUploaded(
            portal_id=portal,
            asset_id=asset_id,
            source=source,
            uploaded_at="2024-01-01T00:00:00Z",
        )
    )
    body.update(changes)
    return body


def assert_queue_still_flows(harness: Harness, portal: str, images: Path) -> None:
    """A good upload sent after the bad one is still processed."""
    harness.upload(portal, "good", write(images / "good.png", photo(70)))
    harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] == "good")


# ----- envelopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("options null", {"options": None}),
        ("options a list", {"options": []}),
        ("retry budget overridden", {"options": {"max_retries": 1000}}),
        ("throws as a string", {"options": {"throws": "Exception"}}),
        ("retries null", {"options": {"retries": None}}),
        ("message_id missing", {"message_id": None}),
        ("message_id empty", {"message_id": ""}),
        ("queue_name of another queue", {"queue_name": SEARCHES_QUEUE}),
        ("actor of another queue", {"actor_name": "find_duplicates"}),
        ("unknown actor", {"actor_name": "rm_rf"}),
        ("two args", {"args": [{}, {}]}),
        ("kwargs given", {"kwargs": {"x": 1}}),
        ("extra top-level key", {"priority": 1}),
    ],
)
def test_malformed_envelopes_are_dead_lettered(
    harness: Harness, portal: str, images: Path, name: str, changes: dict[str, Any]
) -> None:
    marker = f"bad-{uuid.uuid4().hex}"
    body = envelope(portal, marker, str(images / "x.png"), **changes)
    if body.get("message_id") is None:
        body.pop("message_id")
    harness.send_raw(ASSETS_QUEUE, json.dumps(body).encode())
    raw = json.dumps(body).encode()
    harness.dead_body(ASSETS_QUEUE, lambda b: b == raw)
    assert_queue_still_flows(harness, portal, images)
    assert harness.asset(portal, marker) is None


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00garbage", b"[]", b'"just a string"', b"x" * 10_000_000],
    ids=["malformed json", "invalid utf-8", "a json list", "a json string", "10 MB of junk"],
)
def test_undecodable_bodies_are_dead_lettered(
    harness: Harness, portal: str, images: Path, body: bytes
) -> None:
    harness.send_raw(ASSETS_QUEUE, body)
    harness.dead_body(ASSETS_QUEUE, lambda b: b == body)
    assert_queue_still_flows(harness, portal, images)


# ----- payloads --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uploaded_at", "2024-01-01T00:00:00"),  # no timezone
        ("uploaded_at", "yesterday"),
        ("tags", "not-a-list"),
        ("tags", [1, 2]),
        ("title", 42),
        ("source", "relative/path.png"),
        ("source", "ftp://example.org/x.png"),
        ("colour", "red"),  # unknown field
    ],
)
def test_invalid_upload_payloads_fail_with_the_reason(
    harness: Harness, portal: str, images: Path, field: str, value: Any
) -> None:
    asset_id = f"a-{uuid.uuid4().hex[:6]}"
    body = envelope(portal, asset_id, str(write(images / "p.png", photo(71))))
    body["args"][0][field] = value
    harness.send_raw(ASSETS_QUEUE, json.dumps(body).encode())

    (event,) = harness.wait_for(portal, "asset.failed")
    assert (event["asset_id"], event["reason"]) == (asset_id, "invalid_message")
    assert field in event["detail"]
    assert harness.dead_letter(ASSETS_QUEUE, body["message_id"])["args"][0][field] == value
    assert harness.asset(portal, asset_id) is None


def test_invalid_payload_without_readable_ids_is_dead_lettered_silently(
    harness: Harness, portal: str, images: Path
) -> None:
    body = envelope(portal, "a1", "/x.png")
    body["args"] = [{"portal_id": 7, "what": "ever"}]
    harness.send_raw(ASSETS_QUEUE, json.dumps(body).encode())
    harness.dead_letter(ASSETS_QUEUE, body["message_id"])
    assert_queue_still_flows(harness, portal, images)
    assert harness.events(portal, "asset.failed") == []


@pytest.mark.parametrize(
    ("queue", "actor", "payload", "kind", "id_field", "bad_field"),
    [
        (
            SEARCHES_QUEUE,
            "find_duplicates",
            {"request_id": "x1", "max_distance": 99},
            "request.failed",
            "request_id",
            "max_distance",
        ),
        (
            COMMANDS_QUEUE,
            "delete_duplicates",
            {"command_id": "x1", "original_id": "a", "asset_ids": []},
            "command.rejected",
            "command_id",
            "asset_ids",
        ),
        (
            COMMANDS_QUEUE,
            "make_original",
            {"command_id": "x1", "asset_id": ["a"]},
            "command.rejected",
            "command_id",
            "asset_id",
        ),
    ],
)
def test_invalid_searches_and_commands_get_their_failure_event(
    harness: Harness,
    portal: str,
    queue: str,
    actor: str,
    payload: dict[str, Any],
    kind: str,
    id_field: str,
    bad_field: str,
) -> None:
    body: dict[str, Any] = {
        "queue_name": queue,
        "actor_name": actor,
        "kwargs": {},
        "args": [{**payload, "portal_id": portal}],
        "options": {},
        "message_id": uuid.uuid4().hex,
        "message_timestamp": 0,
    }
    harness.send_raw(queue, json.dumps(body).encode())
    (event,) = harness.wait_for(portal, kind)
    assert (event[id_field], event["reason"]) == ("x1", "invalid_message")
    assert bad_field in event["detail"]
    harness.dead_letter(queue, body["message_id"])


# ----- images ----------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces width x height pixels but carries almost no data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def many_frame_gif() -> bytes:
    frames = [Image.new("P", (32, 32), color=i % 256) for i in range(2000)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "unreadable_image"),
        (b"this is a text file, not a picture\n", "unreadable_image"),
        (bytes(range(256)) * 40, "unreadable_image"),
        (encode(photo(72), "JPEG")[:3000], "unreadable_image"),  # truncated
        (encode(photo(72), "PNG")[:-2000], "unreadable_image"),  # truncated
        (png_header_only(100_000, 100_000), "too_large"),  # ten gigapixels
        (png_header_only(13_000, 12_000), "too_large"),  # 156 MP: over the 150 MP limit
    ],
    ids=[
        "zero bytes",
        "text",
        "random bytes",
        "truncated jpeg",
        "truncated png",
        "decompression bomb",
        "over the pixel limit",
    ],
)
def test_unhashable_images_mark_the_asset_failed(
    harness: Harness, portal: str, images: Path, content: bytes, reason: str
) -> None:
    path = images / "bad.img"
    path.write_bytes(content)
    message_id = harness.upload(portal, "bad", path, title="kept")

    (event,) = harness.wait_for(portal, "asset.failed")
    assert (event["asset_id"], event["reason"]) == ("bad", reason)
    assert event["detail"]
    doc = harness.asset(portal, "bad")
    assert doc is not None and doc["state"] == "failed"
    assert doc["failure"]["reason"] == reason and doc["title"] == "kept"
    # An unreadable image is an answer, not a lost message: nothing waits in the dead letters
    with pytest.raises(AssertionError):
        harness.dead_letter(ASSETS_QUEUE, message_id, timeout=0.5)
    assert_queue_still_flows(harness, portal, images)


def test_an_animated_gif_is_hashed_by_its_first_frame(
    harness: Harness, portal: str, images: Path
) -> None:
    path = images / "anim.gif"
    path.write_bytes(many_frame_gif())
    harness.upload(portal, "gif", path)
    (event,) = harness.wait_for(portal, "asset.hashed")
    assert (event["width"], event["height"]) == (32, 32)


def test_a_missing_source_fails_and_is_dead_lettered_for_a_redrive(
    harness: Harness, portal: str, images: Path
) -> None:
    message_id = harness.upload(portal, "gone", images / "does-not-exist.png")
    (event,) = harness.wait_for(portal, "asset.failed")
    assert event["reason"] == "source_not_found"
    assert harness.dead_letter(ASSETS_QUEUE, message_id)["args"][0]["asset_id"] == "gone"
    doc = harness.asset(portal, "gone")
    assert doc is not None and doc["failure"]["reason"] == "source_not_found"


def test_a_later_good_upload_clears_the_failure(
    harness: Harness, portal: str, images: Path
) -> None:
    path = images / "later.png"
    path.write_bytes(b"junk")
    harness.upload(portal, "a1", path)
    harness.wait_for(portal, "asset.failed")
    write(path, photo(73))
    harness.upload(portal, "a1", path)
    harness.wait_for(portal, "asset.hashed")
    doc = harness.asset(portal, "a1")
    assert doc is not None and doc["state"] == "hashed" and "failure" not in doc


def test_a_portal_id_that_would_misroute_its_answer_gets_no_event(
    harness: Harness, portal: str
) -> None:
    # `<portal>.x.asset.failed` would land in the portal's own `<portal>.#` binding
    body = build_envelope(
        AssetUploaded.model_construct(
            portal_id=f"{portal}.x",
            asset_id="a1",
            source="/x.png",
            uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    harness.send_raw(ASSETS_QUEUE, json.dumps(body).encode())
    harness.dead_letter(ASSETS_QUEUE, body["message_id"])
    assert harness.events(portal) == []
