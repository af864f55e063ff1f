"""Every accepted message is answered: unforeseen faults, huge scopes and huge answers too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded

from schemas.contract import ASSETS_QUEUE, SEARCHES_QUEUE
from schemas.messages import FindDuplicates, Scope
from tests.harness import Harness
from tests.images import photo, write
from worker import actors
from worker.core import grouping, pages


def _fails_with(error: BaseException) -> Any:
    def hash_image(*args: object, **kwargs: object) -> None:
        raise error

    return hash_image


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (RuntimeError("a bug nobody foresaw"), "RuntimeError: a bug nobody foresaw"),
        (TimeLimitExceeded(), "TimeLimitExceeded"),
    ],
)
def test_an_unforeseen_error_ends_with_a_failure_event_and_a_dead_letter(
    harness: Harness,
    portal: str,
    images: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    detail: str,
) -> None:
    # Given hashing that fails in a way no code path expects, on every attempt
    monkeypatch.setattr(actors, "hash_image", _fails_with(error))
    message_id = harness.upload(portal, "a1", write(images / "a1.png", photo(1)))

    # Then, once the retries are spent, the portal hears of it once, and the message is kept
    (event,) = harness.wait_for(portal, "asset.failed", timeout=30)
    assert event["reason"] == "internal_error"
    assert event["detail"] == detail
    harness.dead_letter(ASSETS_QUEUE, message_id, timeout=10)
    stored = harness.asset(portal, "a1")
    assert stored is not None
    assert stored["state"] == "failed"
    assert stored["failure"]["reason"] == "internal_error"


def test_an_unforeseen_search_error_ends_with_request_failed(
    harness: Harness, portal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("column")

    monkeypatch.setattr(grouping, "find_sets", broken)
    message_id = harness.send(FindDuplicates(request_id="r1", portal_id=portal))
    (event,) = harness.wait_for(portal, "request.failed", timeout=30)
    assert (event["request_id"], event["reason"]) == ("r1", "internal_error")
    assert "KeyError" in event["detail"]
    harness.dead_letter(SEARCHES_QUEUE, message_id, timeout=10)


def test_a_scope_of_100_000_long_ids_is_answered(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given two copies of one picture, named among 100 000 ids of 200 characters (20 MB of ids:
    # more than one MongoDB query may carry)
    path = write(images / "a.png", photo(2))
    for asset_id in ("copy-1", "copy-2"):
        harness.upload(portal, asset_id, path)
    harness.wait_for(portal, "asset.hashed", count=2)
    ids = ["copy-1", *(f"{n:0200d}" for n in range(99_998)), "copy-2"]

    harness.send(FindDuplicates(request_id="big", portal_id=portal, scope=Scope(asset_ids=ids)))

    (page,) = harness.wait_for(portal, "duplicates.found", timeout=60)
    assert [[a["asset_id"] for a in s["assets"]] for s in page["sets"]] == [["copy-1", "copy-2"]]


def test_pages_are_bounded_in_bytes_and_keep_every_member(
    harness: Harness, portal: str, images: Path
) -> None:
    # Given 24 copies of one picture whose descriptions take 390 kB each once encoded
    path = write(images / "a.png", photo(3))
    copies = [f"c{n:02d}" for n in range(24)]
    for asset_id in copies:
        harness.upload(portal, asset_id, path, description="\u00e9" * 65_000)
    harness.wait_for(portal, "asset.hashed", count=len(copies))

    harness.send(FindDuplicates(request_id="wide", portal_id=portal, match="phash"))

    first = harness.wait_for(portal, "duplicates.found", timeout=30)
    found = harness.wait_for(portal, "duplicates.found", count=first[0]["pages"], timeout=30)
    found.sort(key=lambda e: e["page"])
    assert len(found) > 1
    for page in found:
        body = {k: v for k, v in page.items() if k != "_type"}
        assert len(json.dumps(body, separators=(",", ":"))) <= pages.MAX_PAGE_BYTES
    members = [a["asset_id"] for page in found for s in page["sets"] for a in s["assets"]]
    assert sorted(members) == copies
    assert len(members) == len(copies)
    assert {s["set_id"] for page in found for s in page["sets"]} == {members[0]}
