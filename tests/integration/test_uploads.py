"""Hash on upload: `asset-uploaded` in, `asset.hashed` out, the asset stored with its facts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import imagehash

from schemas.contract import ASSETS_QUEUE
from schemas.messages import AssetRemoved
from tests.harness import Harness
from tests.images import photo, with_exif_orientation, write


def test_upload_is_hashed_and_stored_with_its_metadata(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given an image file the portal just received
    picture = photo(1)
    path = write(images / "a.png", picture)
    uploaded_at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

    # When the portal publishes asset-uploaded
    harness.upload(
        portal,
        "a1",
        path,
        title="Beach",
        description="Sunset",
        tags=["sea", "sun"],
        uploaded_at=uploaded_at,
    )

    # Then the worker publishes asset.hashed with imagehash's exact pHash and the dimensions
    (event,) = harness.wait_for(portal, "asset.hashed")
    assert event == {
        "_type": "asset.hashed",
        "portal_id": portal,
        "asset_id": "a1",
        "phash": str(imagehash.phash(picture)),
        "width": 640,
        "height": 480,
    }
    # And the asset is stored with its metadata, size and hash provenance
    doc = harness.asset(portal, "a1")
    assert doc is not None
    assert doc["state"] == "hashed"
    assert (doc["title"], doc["description"], doc["tags"]) == ("Beach", "Sunset", ["sea", "sun"])
    assert doc["uploaded_at"] == uploaded_at
    assert (doc["width"], doc["height"], doc["pixels"]) == (640, 480, 640 * 480)
    assert doc["size_bytes"] == path.stat().st_size
    assert doc["hash_provenance"]["algorithm"] == "phash"
    assert doc["hash_provenance"]["hash_size"] == 8


def test_file_url_sources_are_read(harness: Harness, portal: str, images: Path) -> None:
    path = write(images / "with space.png", photo(2))
    harness.upload(portal, "u1", "file://" + str(path).replace(" ", "%20"))
    (event,) = harness.wait_for(portal, "asset.hashed")
    assert event["phash"] == str(imagehash.phash(photo(2)))


def test_exif_orientation_is_applied_before_hashing(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given a JPEG stored sideways with EXIF orientation 6 (display rotated)
    upright = photo(3, size=(400, 300))
    path = images / "rotated.jpg"
    path.write_bytes(with_exif_orientation(upright, 6))

    harness.upload(portal, "r1", path)

    # Then its dimensions and hash are those of the upright picture
    (event,) = harness.wait_for(portal, "asset.hashed")
    assert (event["width"], event["height"]) == (400, 300)
    distance = imagehash.hex_to_hash(event["phash"]) - imagehash.phash(upright)
    assert distance <= 4  # JPEG re-compression only; sideways it would be ~32 bits away


def test_replayed_upload_refreshes_metadata_without_rehashing(
    harness: Harness, portal: str, images: Path
) -> None:
    path = write(images / "a.png", photo(4))
    harness.upload(portal, "a1", path, title="old")
    harness.wait_for(portal, "asset.hashed")
    first = harness.asset(portal, "a1")
    assert first is not None

    # When the portal re-sends the upload with new metadata and the same bytes
    harness.upload(portal, "a1", path, title="new", tags=["x"])
    harness.wait_for(portal, "asset.hashed", count=2)

    # Then the metadata is refreshed and the hash kept as it was (not recomputed)
    second = harness.asset(portal, "a1")
    assert second is not None
    assert (second["title"], second["tags"]) == ("new", ["x"])
    assert second["hashed_at"] == first["hashed_at"]
    assert second["phash"] == first["phash"]
    assert harness.db.assets.count_documents({"portal_id": portal}) == 1


def test_upload_with_changed_bytes_is_rehashed(harness: Harness, portal: str, images: Path) -> None:
    path = write(images / "a.png", photo(5))
    harness.upload(portal, "a1", path)
    (first,) = harness.wait_for(portal, "asset.hashed")

    write(path, photo(6))
    harness.upload(portal, "a1", path)
    events = harness.wait_for(portal, "asset.hashed", count=2)

    assert events[1]["phash"] == str(imagehash.phash(photo(6))) != first["phash"]
    doc = harness.asset(portal, "a1")
    assert doc is not None and doc["phash"] == events[1]["phash"]


def test_redelivered_upload_is_harmless(harness: Harness, portal: str, images: Path) -> None:
    # Given the same message delivered twice (same message id, as after a crash)
    path = write(images / "a.png", photo(7))
    message_id = harness.upload(portal, "a1", path)
    harness.wait_for(portal, "asset.hashed")
    from schemas.messages import AssetUploaded

    harness.send(
        AssetUploaded(
            portal_id=portal,
            asset_id="a1",
            source=str(path),
            uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
        ),
        message_id=message_id,
    )
    # Then the result is re-published and the store holds one asset
    events = harness.wait_for(portal, "asset.hashed", count=2)
    assert events[0] == events[1]
    assert harness.db.assets.count_documents({"portal_id": portal}) == 1


def test_removed_asset_never_comes_back_through_a_replayed_upload(
    harness: Harness, portal: str, images: Path
) -> None:
    path = write(images / "a.png", photo(8))
    harness.upload(portal, "a1", path, title="kept")
    harness.wait_for(portal, "asset.hashed")

    # When the portal removes it (which is answered once stored), then replays the old upload
    harness.send(AssetRemoved(portal_id=portal, asset_id="a1"))
    (removed,) = harness.wait_for(portal, "asset.removed")
    assert removed == {"_type": "asset.removed", "portal_id": portal, "asset_id": "a1"}
    harness.upload(portal, "a1", path)

    # Then the replay is refused and the tombstone keeps the metadata
    (event,) = harness.wait_for(portal, "asset.failed")
    assert event["reason"] == "asset_deleted"
    doc = harness.asset(portal, "a1")
    assert doc is not None
    assert doc["state"] == "deleted"
    assert doc["title"] == "kept"
    assert doc["deleted"]["via"] == "asset-removed"


def test_removal_before_the_upload_arrives_still_wins(
    harness: Harness, portal: str, images: Path
) -> None:
    # The portal removed an asset whose upload message is still queued (or replayed later)
    harness.send(AssetRemoved(portal_id=portal, asset_id="ghost"))
    harness.upload(portal, "ghost", write(images / "g.png", photo(9)))

    (event,) = harness.wait_for(portal, "asset.failed")
    assert event["reason"] == "asset_deleted"
    assert harness.db.assets.count_documents({"portal_id": portal, "state": "hashed"}) == 0
    assert harness.queue_depth(ASSETS_QUEUE) == 0


def test_uploads_queued_together_share_their_look_ups(
    harness: Harness, portal: str, images: Path
) -> None:
    from worker import actors

    # Given twelve uploads waiting in the queue when the worker starts
    harness.stop_worker()
    try:
        for n in range(12):
            harness.upload(portal, f"q{n}", write(images / f"q{n}.png", photo(200 + n)))
    finally:
        harness.start_worker(threads=8)
    lookups = actors.resources.runtime.store.upload_lookups
    before = lookups.requests

    # When they are hashed
    events = harness.wait_for(portal, "asset.hashed", count=12, timeout=60)

    # Then each is stored once, with its own hash, and their look-ups went in fewer queries
    # than uploads: those received while others were hashed were asked together
    assert sorted(e["asset_id"] for e in events) == sorted(f"q{n}" for n in range(12))
    assert harness.db.assets.count_documents({"portal_id": portal, "state": "hashed"}) == 12
    assert 1 <= lookups.requests - before < 12
