"""Every command the worker sends MongoDB names its collection's shard key (`store.SHARD_KEYS`),
so on a sharded cluster each goes to one portal's shards, never to all of them.

The worker runs as its own process with a probe on its PYTHONPATH that logs every command
PyMongo sends (tests/probes/sitecustomize.py), and serves one portal's whole life: uploads,
a search, every review decision, make-original, a merging delete, a removal and `status`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest

from schemas.contract import RESULTS_EXCHANGE
from schemas.messages import (
    AssetRemoved,
    AssetUploaded,
    DeleteDuplicates,
    FindDuplicates,
    ForgetDecisions,
    KeepSet,
    MakeOriginal,
    MarkDistinct,
    Merge,
    Payload,
)
from schemas.publisher import PortalPublisher
from tests.cli import dupfinder
from tests.faults.cluster import WorkerProcess, worker_env
from tests.harness import own_vhost
from tests.images import photo, write
from worker.store import SHARD_KEYS

PROBE = Path(__file__).resolve().parents[1] / "probes"
#: Commands that carry no query of a collection.
UNSCOPED = {"ping", "hello", "isMaster", "ismaster", "endSessions", "getMore", "killCursors"}


@pytest.fixture
def vhost() -> Iterator[str]:
    with own_vhost("dupfinder-shards") as url:
        yield url


class Portal:
    """One portal on the wire: publishes, and collects its results by type."""

    def __init__(self, url: str) -> None:
        self.publisher = PortalPublisher(url)
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = self._connection.channel()
        channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, RESULTS_EXCHANGE, routing_key="#")
        self._results = channel.consume(queue, auto_ack=True, inactivity_timeout=0.1)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def send(self, payload: Payload) -> None:
        self.publisher.publish(payload)

    def wait(self, kind: str, count: int = 1, seconds: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while True:
            seen = [body for k, body in self.events if k == kind]
            if len(seen) >= count:
                return seen
            assert time.monotonic() < deadline, (kind, self.events)
            method, _properties, body = next(self._results)
            if method is not None:
                self.events.append((method.routing_key.split(".", 1)[1], json.loads(body)))

    def close(self) -> None:
        self.publisher.close()
        self._connection.close()


def _scoping(name: str, command: dict[str, Any]) -> list[dict[str, Any]]:
    """The filters (or inserted documents) a command applies to its collection."""
    if name == "find" or name == "distinct":
        return [command.get("filter", command.get("query", {}))]
    if name in ("update", "delete"):
        return [op["q"] for op in command[f"{name}s"]]
    if name == "findAndModify":
        return [command["query"]]
    if name == "insert":
        return list(command["documents"])
    if name == "aggregate":
        first = command["pipeline"][0] if command["pipeline"] else {}
        return [first.get("$match", {})]
    if name == "count":
        return [command.get("query", {})]
    raise AssertionError(f"unforeseen command {name}: {command}")


def test_every_query_names_its_collections_shard_key(
    vhost: str, mongo_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "commands.jsonl"
    env = worker_env(vhost, mongo_url, f"shards_{uuid.uuid4().hex[:8]}")
    env.update(
        PYTHONPATH=os.pathsep.join([str(PROBE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        DUPFINDER_TEST_COMMAND_LOG=str(log),
        DUPFINDER_MATCH="verified",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    portal_id = "acme"
    picture = photo(31, size=(96, 72))
    sources = {
        "a1": write(tmp_path / "a1.png", picture),
        "a2": write(tmp_path / "a2.png", picture),
        "a3": write(tmp_path / "a3.png", picture),
        "a4": write(tmp_path / "a4.png", photo(32, size=(96, 72))),
    }
    worker.start()
    portal = Portal(vhost)
    try:
        for n, (asset_id, path) in enumerate(sources.items()):
            portal.send(
                AssetUploaded(
                    portal_id=portal_id,
                    asset_id=asset_id,
                    source=str(path),
                    title=f"photo {n}",
                    uploaded_at=datetime(2024, 1, 1 + n, tzinfo=UTC),
                )
            )
        portal.wait("asset.hashed", 4, seconds=90)
        commands: list[tuple[Payload, str]] = [
            (FindDuplicates(request_id="r1", portal_id=portal_id), "duplicates.found"),
            (
                MarkDistinct(command_id="c1", portal_id=portal_id, asset_ids=["a1", "a4"]),
                "distinct.marked",
            ),
            (KeepSet(command_id="c2", portal_id=portal_id, asset_ids=["a1", "a2"]), "set.kept"),
            (
                ForgetDecisions(command_id="c3", portal_id=portal_id, asset_ids=["a2"]),
                "decisions.forgotten",
            ),
            (MakeOriginal(command_id="c4", portal_id=portal_id, asset_id="a2"), "original.changed"),
            (
                DeleteDuplicates(
                    command_id="c5",
                    portal_id=portal_id,
                    original_id="a2",
                    asset_ids=["a1"],
                    merge=Merge(tags="union"),
                ),
                "duplicates.deleted",
            ),
            (AssetRemoved(portal_id=portal_id, asset_id="a3"), "asset.removed"),
            (FindDuplicates(request_id="r2", portal_id=portal_id), "duplicates.found"),
        ]
        for payload, answer in commands:
            before = len([k for k, _ in portal.events if k == answer])
            portal.send(payload)
            portal.wait(answer, before + 1)
        status = dupfinder("status", "--portal", portal_id, "--json", env=env)
        assert status.returncode == 0, status.stderr
    finally:
        portal.close()
        worker.terminate()

    seen: dict[str, int] = {}
    unscoped = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        name, command = entry["name"], entry["command"]
        collection = command.get(name)
        if name in UNSCOPED or name == "createIndexes" or collection not in SHARD_KEYS:
            continue
        key = next(iter(SHARD_KEYS[collection]))
        seen[collection] = seen.get(collection, 0) + 1
        for scope in _scoping(name, command):
            if key not in scope:
                unscoped.append((collection, name, scope))
    assert unscoped == [], unscoped[:5]
    assert sum(seen.values()) > 50  # a whole life of a portal, not a handful of commands
    # and the probe saw the worker use every collection, so the check had something to check
    assert set(seen) == set(SHARD_KEYS), seen
