"""Watching the worker: metrics, a liveness that reflects progress, readiness."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness import Harness
from tests.images import encode, photo, write
from tests.sources import ScriptedSource, serve


def get(path: str) -> tuple[int, str]:
    from worker import actors

    url = f"http://127.0.0.1:{actors.watch.bound_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_readiness_and_metrics(harness: Harness, portal: str, images: Path) -> None:
    assert get("/readyz") == (200, "ok: RabbitMQ and MongoDB answer")
    harness.upload(portal, "m1", write(images / "m.png", photo(160)))
    harness.wait_for(portal, "asset.hashed")
    status, metrics = get("/metrics")
    assert status == 200
    assert 'dupfinder_messages_total{actor="asset_uploaded",outcome="ok"}' in metrics
    assert 'dupfinder_assets_hashed_total{decoder="full"}' in metrics
    assert "dupfinder_hash_seconds_count" in metrics
    assert get("/nope")[0] == 404


def test_liveness_fails_while_a_message_is_stuck_and_recovers(
    harness: Harness, portal: str
) -> None:
    assert get("/livez")[0] == 200  # idle is alive
    # A source that hangs for one attempt (the tests' liveness timeout is 2 s, fetches 3 s)
    source = ScriptedSource(encode(photo(161)), failures=1, trickle_s=6)
    with serve(source) as base:
        harness.upload(portal, "slow", f"{base}/slow.png")
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            status, body = get("/livez")
            seen.append(status)
            if status == 503:
                assert "in flight, none finished" in body
                # and the asset shows as pending meanwhile (received, not yet hashed)
                stuck = harness.asset(portal, "slow")
                assert stuck is not None and stuck["state"] == "pending"
                break
            time.sleep(0.2)
        assert 503 in seen
        harness.wait_for(portal, "asset.hashed", timeout=30)
    assert get("/livez")[0] == 200
