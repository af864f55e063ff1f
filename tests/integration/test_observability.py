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


def _upload_writes() -> dict[str, float]:
    """`dupfinder_upload_writes_total` by state, from the worker's /metrics."""
    counts = {"pending": 0.0, "hashed": 0.0, "failed": 0.0}
    for line in get("/metrics")[1].splitlines():
        if line.startswith("dupfinder_upload_writes_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('state="')[1].split('"')[0]] = float(value)
    return counts


def test_a_first_upload_hashed_in_time_is_written_once(
    harness: Harness, portal: str, images: Path
) -> None:
    """No `pending` mark before a quick hash: one write an upload, its outcome."""
    before = _upload_writes()
    for n in range(3):
        harness.upload(portal, f"w{n}", write(images / f"w{n}.png", photo(170 + n)))
    harness.wait_for(portal, "asset.hashed", count=3)
    after = _upload_writes()
    assert after["hashed"] - before["hashed"] == 3
    assert after["pending"] - before["pending"] == 0
    assert harness.asset(portal, "w0")["state"] == "hashed"  # type: ignore[index]


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
