"""`dupfinder worker --embedded`: a newcomer's worker on an embedded MongoDB-protocol server,
serving uploads and searches end to end, in a vhost of the test's own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from schemas.contract import ASSETS_QUEUE, RESULTS_EXCHANGE
from schemas.messages import AssetUploaded, FindDuplicates
from schemas.publisher import PortalPublisher
from tests.harness import own_vhost
from tests.images import photo, write


@pytest.fixture
def vhost() -> Iterator[str]:
    """An AMQP URL on a vhost of its own, deleted after."""
    with own_vhost("dupfinder-embedded") as url:
        yield url


def _wait_for_queue(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        while True:
            try:
                connection.channel().queue_declare(ASSETS_QUEUE, passive=True)
                return
            except pika.exceptions.ChannelClosedByBroker:
                assert process.poll() is None, "the worker exited"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        connection.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_worker_serves_uploads_and_searches_on_an_embedded_database(
    vhost: str, tmp_path: Path
) -> None:
    picture = write(tmp_path / "p.png", photo(90))
    data, log = tmp_path / "data", tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPFINDER_MONGODB")}
    env.update(DUPFINDER_AMQP_URL=vhost, DUPFINDER_MANAGEMENT_URL="", DUPFINDER_HTTP_PORT="0")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "worker.cli", "worker", "--embedded"),
                *("--data", str(data), "--processes", "1", "--threads", "2"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_queue(vhost, process, 90)
        connection = pika.BlockingConnection(pika.URLParameters(vhost))
        channel = connection.channel()
        channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, RESULTS_EXCHANGE, routing_key="trial.#")
        with PortalPublisher(vhost) as publisher:
            for asset_id in ("a1", "a2"):
                publisher.publish(
                    AssetUploaded(
                        portal_id="trial",
                        asset_id=asset_id,
                        source=str(picture),
                        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
                    )
                )
            events: list[tuple[str, dict[str, Any]]] = []
            deadline = time.monotonic() + 60
            asked = False
            for method, _props, body in channel.consume(queue, inactivity_timeout=0.2):
                if method is not None:
                    channel.basic_ack(method.delivery_tag)
                    events.append((method.routing_key, json.loads(body)))
                hashed = [e for k, e in events if k == "trial.asset.hashed"]
                if len(hashed) == 2 and not asked:
                    publisher.publish(FindDuplicates(request_id="r1", portal_id="trial"))
                    asked = True
                if any(k == "trial.duplicates.found" for k, _ in events):
                    break
                assert time.monotonic() < deadline, f"no answer; events so far: {events}"
            channel.cancel()
        connection.close()
        (found,) = [e for k, e in events if k == "trial.duplicates.found"]
        assert [[a["asset_id"] for a in s["assets"]] for s in found["sets"]] == [["a1", "a2"]]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
    text = log.read_text()
    # It says loudly what it is, keeps its data where it said, and stops its server with it
    assert "EMBEDDED DATABASE, FOR TRYING DUPFINDER OUT ONLY" in text
    assert str(data.resolve()) in text
    assert (data / "data").is_dir()
    port = int(text.split("mongodb://127.0.0.1:", 1)[1].split("/", 1)[0])
    assert not _listening(port)
    assert code == 0, text[-2000:]


def test_embedded_without_the_server_installed_says_what_to_do(tmp_path: Path) -> None:
    from unittest import mock

    from worker import embedded

    with (
        mock.patch.object(embedded.shutil, "which", return_value=None),
        mock.patch.object(embedded, "Path", return_value=tmp_path / "nothing"),
        pytest.raises(embedded.EmbeddedUnavailable, match="pip install secantusdb"),
    ):
        embedded.server_command()
