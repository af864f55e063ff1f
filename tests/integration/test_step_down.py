"""A replica set's primary steps down under a write: the driver says `NotPrimaryError`, whether or
not the write was applied. No replica set runs here, so the error is raised at the store's edge
(PyMongo's collection methods) after the real write went through, the worst case: the worker
must take it for a transient fault, retry, and leave exactly one effect and one answer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import NotPrimaryError

from schemas.messages import MakeOriginal
from tests.harness import Harness
from tests.images import photo, write


class StepDown:
    """Fails the first matching call of a collection method after applying it."""

    def __init__(self, wanted: Callable[[str, dict[str, Any]], bool]) -> None:
        self.wanted = wanted
        self.raised = 0
        self.calls = 0


@pytest.fixture
def step_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., StepDown]]:
    def install(method: str, wanted: Callable[[str, dict[str, Any]], bool]) -> StepDown:
        fault = StepDown(wanted)
        original = getattr(AsyncCollection, method)

        async def applied_then_lost(
            self: AsyncCollection[Any], first: Any, *a: Any, **k: Any
        ) -> Any:
            result = await original(self, first, *a, **k)
            if fault.wanted(self.name, first):
                fault.calls += 1
                if fault.raised == 0:
                    fault.raised += 1
                    raise NotPrimaryError("not primary (simulated step-down)", {"code": 10107})
            return result

        monkeypatch.setattr(AsyncCollection, method, applied_then_lost)
        return fault

    yield install


def _taken_for_transient(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the worker logged the step-down as the store being unavailable (a retry)."""
    return any(
        "MongoDB unavailable: not primary" in record.getMessage() for record in caplog.records
    )


def test_a_step_down_under_the_hash_write_is_retried_and_stored_once(
    harness: Harness,
    portal: str,
    tmp_path: Any,
    step_down: Callable[..., StepDown],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The hash is stored through the process's write batcher, as one `bulk_write`: inserted
    # the first time (no document was there), upserted when the retry finds it.
    def hashed_a1(request: Any) -> bool:
        document = getattr(request, "_doc", {})
        named = getattr(request, "_filter", None) or document
        written = document.get("$set", document)
        return (named.get("portal_id"), named.get("asset_id")) == (portal, "a1") and (
            written.get("state") == "hashed"
        )

    def storing_a1(collection: str, requests: list[Any]) -> bool:
        return collection == "assets" and any(hashed_a1(r) for r in requests)

    fault = step_down("bulk_write", storing_a1)
    harness.upload(portal, "a1", write(tmp_path / "a1.png", photo(71)))
    (hashed,) = harness.wait_for(portal, "asset.hashed", timeout=30)
    assert fault.raised == 1 and fault.calls >= 2  # it was written, lost, and written again
    assert _taken_for_transient(caplog)
    assert harness.events(portal, "asset.failed") == []
    assert harness.db.assets.count_documents({"portal_id": portal, "asset_id": "a1"}) == 1
    assert harness.asset(portal, "a1")["phash"] == hashed["phash"]  # type: ignore[index]


def test_a_step_down_under_a_command_outcome_publishes_that_outcome_once(
    harness: Harness,
    portal: str,
    tmp_path: Any,
    step_down: Callable[..., StepDown],
    caplog: pytest.LogCaptureFixture,
) -> None:
    picture = photo(72)
    for name in ("a1", "a2"):
        harness.upload(portal, name, write(tmp_path / f"{name}.png", picture))
    harness.wait_for(portal, "asset.hashed", count=2)
    fault = step_down(
        "insert_one",
        lambda collection, document: (
            collection == "commands" and document.get("portal_id") == portal
        ),
    )
    harness.send(MakeOriginal(command_id="c1", portal_id=portal, asset_id="a2"))
    (changed,) = harness.wait_for(portal, "original.changed", timeout=30)
    assert fault.raised == 1
    assert _taken_for_transient(caplog)
    assert changed["asset_id"] == "a2"
    time.sleep(1)  # a second answer would come within this
    assert len(harness.events(portal, "original.changed")) == 1
    # One outcome recorded, and the pin applied once (the retry found the outcome recorded).
    assert harness.db.commands.count_documents({"portal_id": portal, "command_id": "c1"}) == 1
    assert harness.asset(portal, "a2")["pinned_by"] == "c1"  # type: ignore[index]
    assert harness.events(portal, "command.rejected") == []
