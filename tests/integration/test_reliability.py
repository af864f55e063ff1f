"""Transient faults retry with backoff; what keeps failing ends dead-lettered, never dropped."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import imagehash
import pytest

from schemas.contract import ASSETS_QUEUE, delay_queue
from tests.harness import Harness, SecantusServer
from tests.images import encode, photo, write
from tests.sources import ScriptedSource, serve


def test_http_sources_are_fetched(harness: Harness, portal: str) -> None:
    source = ScriptedSource(encode(photo(80)))
    with serve(source) as base:
        harness.upload(portal, "h1", f"{base}/h1.png")
        (event,) = harness.wait_for(portal, "asset.hashed")
    assert event["phash"] == str(imagehash.phash(photo(80)))


def test_a_source_that_fails_for_a_while_is_retried_until_it_answers(
    harness: Harness, portal: str
) -> None:
    source = ScriptedSource(encode(photo(81)), failures=2, status=503)
    with serve(source) as base:
        harness.upload(portal, "h1", f"{base}/h1.png")
        harness.wait_for(portal, "asset.hashed")
    assert source.requests == 3
    assert harness.events(portal, "asset.failed") == []


def test_a_source_that_keeps_failing_is_dead_lettered_with_a_failure_event(
    harness: Harness, portal: str
) -> None:
    source = ScriptedSource(b"", failures=1000, status=503)
    with serve(source) as base:
        message_id = harness.upload(portal, "h1", f"{base}/h1.png")
        envelope = harness.dead_letter(ASSETS_QUEUE, message_id, timeout=30)
    # Tests run with 3 retries: four attempts in all, then the dead-letter queue
    assert source.requests == 4
    assert envelope["options"]["retries"] == 3  # as it was delivered for its last attempt
    (event,) = harness.wait_for(portal, "asset.failed")
    assert event["reason"] == "source_unavailable"


def test_a_404_source_is_not_retried(harness: Harness, portal: str) -> None:
    source = ScriptedSource(b"", failures=1000, status=404)
    with serve(source) as base:
        message_id = harness.upload(portal, "h1", f"{base}/h1.png")
        harness.dead_letter(ASSETS_QUEUE, message_id)
    assert source.requests == 1
    (event,) = harness.wait_for(portal, "asset.failed")
    assert event["reason"] == "source_not_found"


@pytest.fixture
def delay_queue_refuses_publishes() -> Iterator[None]:
    """A RabbitMQ policy under which the retry queue refuses every message (Dramatiq #545)."""
    name = "dupfinder-test-refuse-retries"
    pattern = f"^{delay_queue(ASSETS_QUEUE).replace('.', '[.]')}$"
    subprocess.run(
        [
            "rabbitmqctl",
            "set_policy",
            "--apply-to",
            "queues",
            name,
            pattern,
            '{"max-length":0,"overflow":"reject-publish"}',
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    time.sleep(1)  # policies apply asynchronously
    try:
        yield
    finally:
        subprocess.run(
            ["rabbitmqctl", "clear_policy", name], check=True, capture_output=True, timeout=60
        )


def test_a_retry_that_cannot_be_enqueued_is_dead_lettered_not_lost(
    harness: Harness, portal: str, delay_queue_refuses_publishes: None
) -> None:
    # Given the first attempt fails transiently and the retry queue refuses the retry
    source = ScriptedSource(encode(photo(82)), failures=1000, status=503)
    with serve(source) as base:
        message_id = harness.upload(portal, "h1", f"{base}/h1.png")
        # Then the message is dead-lettered rather than acknowledged and dropped
        envelope = harness.dead_letter(ASSETS_QUEUE, message_id, timeout=60)
    assert envelope["args"][0]["asset_id"] == "h1"
    assert source.requests == 1


def test_a_database_outage_is_retried_and_the_upload_lands_afterwards(
    harness: Harness, portal: str, images: Path, secantus: SecantusServer | None
) -> None:
    if secantus is None:
        pytest.skip("needs the in-process server, which this run replaced by DUPFINDER_MONGODB_URL")
    path = write(images / "p.png", photo(83))
    secantus.stop()
    try:
        harness.upload(portal, "a1", path)
        time.sleep(1.5)  # the first attempt times out against the stopped server
    finally:
        secantus.start()
    (event,) = harness.wait_for(portal, "asset.hashed", timeout=30)
    assert event["asset_id"] == "a1"
    doc = harness.asset(portal, "a1")
    assert doc is not None and doc["state"] == "hashed"
