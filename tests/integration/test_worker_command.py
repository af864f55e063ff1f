"""`dupfinder worker` as operators run it: a separate process, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import dupfinder
from tests.harness import Harness
from tests.images import photo, write


@pytest.fixture
def only_the_command_worker(harness: Harness) -> Iterator[None]:
    """Pause the in-process worker so that the command's worker must do the work."""
    harness.stop_worker()
    try:
        yield
    finally:
        harness.start_worker()


def test_the_worker_command_serves_the_queues_and_stops_cleanly(
    harness: Harness, portal: str, images: Path, only_the_command_worker: None
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--processes", "1", "--threads", "2"],
        env={**os.environ, "DUPFINDER_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        harness.upload(portal, "a1", write(images / "a.png", photo(95)))
        (event,) = harness.wait_for(portal, "asset.hashed", timeout=60)
        assert event["asset_id"] == "a1"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Worker process is ready for action." in output


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return dupfinder("check", env=env, timeout=60)


def test_check_reports_ready_services(harness: Harness) -> None:
    result = run_check({})
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stdout


def test_check_names_the_service_that_is_down(harness: Harness) -> None:
    result = run_check(
        {"DUPFINDER_MONGODB_URL": "mongodb://127.0.0.1:9/", "DUPFINDER_MONGODB_TIMEOUT_MS": "300"}
    )
    assert result.returncode == 1
    assert "not ready: MongoDB" in result.stderr
    assert "RabbitMQ" not in result.stderr
