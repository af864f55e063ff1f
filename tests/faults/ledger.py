"""The Jepsen-style ledger: count a message only once RabbitMQ confirmed it, then check the end
state against everything counted."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pymongo
import pymongo.database

from schemas.contract import ROUTES, QueueType, dead_letter_queue, queue_declarations
from schemas.messages import AssetUploaded, Payload
from schemas.publisher import PortalPublisher, connect, with_connection_defaults


def ledger_images(folder: Path, first_seed: int) -> list[tuple[Path, str]]:
    """Thirty small distinct photographs a suite uploads, each with the pHash it must get."""
    from tests.images import photo, write
    from worker.core.hashing import hash_image

    images = []
    for n in range(30):
        path = write(folder / "images" / f"{n}.png", photo(first_seed + n, size=(64, 48)))
        images.append((path, hash_image(path.read_bytes(), max_pixels=10**8).phash))
    return images


@dataclass(frozen=True)
class Entry:
    message_id: str
    portal_id: str
    asset_id: str
    phash: str


@dataclass
class Ledger:
    """Confirmed uploads, published at least once each."""

    amqp_url: str
    queue_type: QueueType = "classic"
    entries: list[Entry] = field(default_factory=list)
    republished: int = 0

    published_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def publish(
        self, portal: str, asset_id: str, source: Path, phash: str, *, twice: bool = False
    ) -> None:
        """Publish one upload until confirmed; `twice` delivers the same message again."""
        upload = AssetUploaded(
            portal_id=portal,
            asset_id=asset_id,
            source=str(source),
            uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
        message_id = str(uuid.uuid4())
        deadline = time.monotonic() + 120
        self.published_at.setdefault((portal, asset_id), time.monotonic())
        for _ in range(2 if twice else 1):
            self._publish_confirmed(upload, message_id, deadline)
        self.entries.append(Entry(message_id, portal, asset_id, phash))

    def _publish_confirmed(self, upload: Payload, message_id: str, deadline: float) -> None:
        while True:
            try:
                self._publisher().publish(upload, message_id=message_id)
                return
            except (pika.exceptions.AMQPError, OSError):
                # Not confirmed: the broker may or may not have it. Publish again, same id.
                self._drop()
                self.republished += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    _connection: PortalPublisher | None = None

    def send(self, payload: Payload) -> None:
        """Publish any payload once, confirmed (commands and searches)."""
        self._publish_confirmed(payload, str(uuid.uuid4()), time.monotonic() + 120)

    def _publisher(self) -> PortalPublisher:
        if self._connection is None:
            # Under a memory alarm RabbitMQ blocks publishers; time out instead of hanging.
            self._connection = PortalPublisher(
                with_connection_defaults(self.amqp_url, blocked_connection_timeout_s=20),
                queue_type=self.queue_type,
            )
            # (the publisher adds a 300 s default; the suite wants a faster verdict)
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a broken connection fails to close many ways
                self._connection.close()
            self._connection = None

    def close(self) -> None:
        self._drop()


@dataclass
class Verdicts:
    """The five invariants, each with what was seen."""

    results: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.results[name] = (ok, detail)

    def report(self, title: str) -> str:
        lines = [f"== {title}"]
        lines += [
            f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}"
            for name, (ok, detail) in self.results.items()
        ]
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.results.values())


class ResultWatcher:
    """Records when each `asset.hashed` arrives, on a connection and thread of its own."""

    def __init__(self, amqp_url: str) -> None:
        import threading

        self.first_hashed: dict[tuple[str, str], float] = {}
        self.events = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(amqp_url,), daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _run(self, amqp_url: str) -> None:
        while not self._stop.is_set():
            try:
                self._watch(amqp_url)
            except (pika.exceptions.AMQPError, OSError):
                # The fault under test may drop this connection too: reconnect. Events sent
                # while it was down reached no queue of ours and are not counted.
                self.reconnects += 1
                time.sleep(0.5)

    def _watch(self, amqp_url: str) -> None:
        import json

        connection = connect(amqp_url)
        try:
            channel = connection.channel()
            channel.exchange_declare("dupfinder.results", exchange_type="topic", durable=True)
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queue, "dupfinder.results", routing_key="*.asset.hashed")
            self._ready.set()
            for method, _props, body in channel.consume(
                queue, auto_ack=True, inactivity_timeout=0.2
            ):
                if self._stop.is_set():
                    return
                if method is not None:
                    event = json.loads(body)
                    self.events += 1
                    key = (event["portal_id"], event["asset_id"])
                    self.first_hashed.setdefault(key, time.monotonic())
        finally:
            if connection.is_open:
                connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class CommandWatcher:
    """Collects command outcomes (`original.changed`, `duplicates.deleted`, `command.rejected`)."""

    def __init__(self, amqp_url: str) -> None:
        import json
        import threading

        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        ready = threading.Event()

        def run() -> None:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            channel = connection.channel()
            channel.exchange_declare("dupfinder.results", exchange_type="topic", durable=True)
            queue = channel.queue_declare("", exclusive=True).method.queue
            for key in ("original.changed", "duplicates.deleted", "command.rejected"):
                channel.queue_bind(queue, "dupfinder.results", routing_key=f"*.{key}")
            ready.set()
            for method, _props, body in channel.consume(
                queue, auto_ack=True, inactivity_timeout=0.2
            ):
                if self._stop.is_set():
                    break
                if method is not None:
                    kind = method.routing_key.split(".", 1)[1]  # `<portal_id>.<type>`
                    self.events.append({**json.loads(body), "_type": kind})
            connection.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(30)

    def wait(self, count: int, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.events)} of {count} command outcomes arrived")
            time.sleep(0.2)
        return list(self.events)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def queue_counts(amqp_url: str) -> dict[str, int]:
    """Ready messages of every dupfinder queue, its retry or wait queues and its dead letters
    (0 for those not declared)."""
    connection = connect(amqp_url)
    try:
        counts = {}
        for route in ROUTES.values():
            for name in queue_declarations(route.queue_name, "quorum"):
                channel = connection.channel()
                try:
                    counts[name] = channel.queue_declare(name, passive=True).method.message_count
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    counts[name] = 0
        return counts
    finally:
        connection.close()


def dead_message_ids(amqp_url: str, queue: str) -> set[str]:
    """Ids of the messages in a dead-letter queue (read, then handed back)."""
    import json

    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        ids: set[str] = set()
        while True:
            method, _props, body = channel.basic_get(dead_letter_queue(queue), auto_ack=False)
            if method is None:
                return ids
            try:
                ids.add(json.loads(body)["message_id"])
            except (ValueError, KeyError, TypeError):
                continue
    finally:
        connection.close()


def check(
    ledger: Ledger,
    db: pymongo.database.Database[dict[str, Any]],
    *,
    drained_within_s: float,
    workers_alive: Callable[[], bool],
    memory_mib: Callable[[], float],
    memory_before_mib: float,
    memory_growth_bound_mib: float = 200,
) -> Verdicts:
    """Wait for the backlog to drain, then judge the five invariants."""
    verdicts = Verdicts()
    expected = {(e.portal_id, e.asset_id): e for e in ledger.entries}
    portals = sorted({e.portal_id for e in ledger.entries})
    start = time.monotonic()
    drained = False
    while time.monotonic() - start < drained_within_s:
        counts = queue_counts(ledger.amqp_url)
        busy = sum(n for name, n in counts.items() if not name.endswith(".XQ"))
        settled = db.assets.count_documents(
            {"portal_id": {"$in": portals}, "state": {"$in": ["hashed", "failed"]}}
        )
        if busy == 0 and settled + counts["dupfinder.assets.XQ"] >= len(expected):
            drained = True
            break
        time.sleep(0.5)
    waited = time.monotonic() - start
    verdicts.record(
        "liveness",
        drained and workers_alive(),
        f"backlog drained in {waited:.1f} s (bound {drained_within_s:.0f} s), "
        f"worker alive: {workers_alive()}",
    )

    docs = list(db.assets.find({"portal_id": {"$in": portals}}, {"_id": 0}))
    per_key = Counter((d["portal_id"], d["asset_id"]) for d in docs)
    dead = dead_message_ids(ledger.amqp_url, "dupfinder.assets")
    lost = []
    for key, entry in expected.items():
        doc = next((d for d in docs if (d["portal_id"], d["asset_id"]) == key), None)
        if not ((doc and doc["state"] == "hashed") or entry.message_id in dead):
            lost.append(key)
    verdicts.record(
        "no loss",
        not lost,
        f"{len(expected)} confirmed, {len(expected) - len(lost)} done or "
        f"dead-lettered, {len(lost)} lost {lost[:5]}",
    )
    duplicated = [k for k, n in per_key.items() if n > 1]
    wrong = [
        k
        for k in expected
        if any(
            (d["portal_id"], d["asset_id"]) == k and d.get("phash") != expected[k].phash
            for d in docs
        )
    ]
    verdicts.record(
        "idempotent effect",
        not duplicated and not wrong and len(per_key) == len(expected),
        f"{len(per_key)} assets stored for {len(expected)} uploads, "
        f"{len(duplicated)} duplicated, {len(wrong)} with a wrong hash",
    )
    foreign = [k for k in per_key if k not in expected]
    verdicts.record(
        "isolation", not foreign, f"{len(foreign)} assets in a portal that did not upload them"
    )
    after = memory_mib()
    verdicts.record(
        "bounded resources",
        after - memory_before_mib < memory_growth_bound_mib,
        f"worker memory {memory_before_mib:.0f} -> {after:.0f} MiB (bound +"
        f"{memory_growth_bound_mib:.0f}); {ledger.republished} publishes repeated "
        "after an unconfirmed attempt",
    )
    return verdicts
