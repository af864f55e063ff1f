"""`dupfinder worker` as operators run it: a separate process, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import dupfinder
from tests.harness import Harness
from tests.images import encode, photo, write
from tests.sources import ScriptedSource, serve


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


def worker_in_own_group(processes: int, threads: int, **env: str) -> subprocess.Popen[str]:
    """`dupfinder worker` in a process group of its own, as systemd runs it, output captured."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "worker.cli", "worker"),
            *("--processes", str(processes), "--threads", str(threads)),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_sigterm_to_the_whole_process_group_stops_within_the_grace_time(
    harness: Harness, portal: str, images: Path, only_the_command_worker: None
) -> None:
    # Given a worker of two processes in a process group of its own, one upload done and one
    # held in flight by a source that trickles for longer than the grace time
    grace_s = 4.0
    process = worker_in_own_group(
        processes=2, threads=2, DUPFINDER_STOP_GRACE_S=str(grace_s), DUPFINDER_FETCH_TIMEOUT_S="60"
    )
    slow = ScriptedSource(encode(photo(96)), failures=1, trickle_s=30)
    with serve(slow) as base:
        try:
            harness.upload(portal, "ready", write(images / "a.png", photo(95)))
            harness.wait_for(portal, "asset.hashed", timeout=60)
            harness.upload(portal, "slow", f"{base}/slow.png")
            deadline = time.monotonic() + 20
            while slow.requests == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert slow.requests == 1

            # When the whole group is told to stop, as systemd and `timeout` do
            started = time.monotonic()
            os.killpg(process.pid, signal.SIGTERM)
            output, _ = process.communicate(timeout=grace_s + 30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        stopped_in = time.monotonic() - started

        # Then it exits within the grace time (and a second to notice), says why, and the
        # unfinished upload is redelivered, not lost
        assert stopped_in < grace_s + 3, output
        assert "Killing worker process" not in output
        assert "unacknowledged" in output
        harness.start_worker()
        harness.wait_for(portal, "asset.hashed", lambda e: e["asset_id"] == "slow", timeout=60)
    assert slow.requests >= 2


def test_sigterm_to_the_group_while_a_process_still_boots_stops_within_the_grace_time(
    harness: Harness, only_the_command_worker: None
) -> None:
    # Given a worker process held in its boot: it waits for a database that does not answer
    # (a closed loopback port), with its event-loop thread already running
    grace_s = 3.0
    process = worker_in_own_group(
        processes=1,
        threads=1,
        DUPFINDER_STOP_GRACE_S=str(grace_s),
        DUPFINDER_LOG_LEVEL="INFO",
        DUPFINDER_MONGODB_URL="mongodb://127.0.0.1:9/",
        DUPFINDER_MONGODB_TIMEOUT_MS="60000",
    )
    lines: list[str] = []
    booting = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "compiled loops ready" in line:
                booting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert booting.wait(120), "".join(lines)
        time.sleep(0.5)  # into the wait for the database

        # When the whole group is told to stop before the worker is ready
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s + 30)
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    reader.join(10)
    assert process.stdout is not None
    process.stdout.close()
    output = "".join(lines)

    # Then the second SIGTERM (the one the main process forwards) does not become Dramatiq's
    # abrupt exit, and the stop keeps its deadline although the boot never finishes
    assert "Worker process is ready for action." not in output
    assert "Killing worker process" not in output, output
    assert stopped_in < grace_s + 3, output
    assert "still running" in output, output


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return dupfinder("check", env=env, timeout=60)


def test_check_reports_ready_services(harness: Harness) -> None:
    result = run_check({})
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stdout


def test_check_names_the_service_that_is_down(harness: Harness) -> None:
    result = run_check(
        {
            "DUPFINDER_MONGODB_URL": "mongodb://user:s3cret@127.0.0.1:9/",
            "DUPFINDER_MONGODB_TIMEOUT_MS": "300",
        }
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    # One short line: which service, where, and what to do; never the credentials
    assert line.startswith("not ready: MongoDB does not answer at 127.0.0.1:9"), line
    assert "DUPFINDER_MONGODB_URL" in line and len(line) < 200
    assert "s3cret" not in result.stderr
    assert "RabbitMQ" not in result.stderr
