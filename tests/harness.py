"""The integration-test harness: real services, a real worker, and the portal's side of the wire.

`Harness` runs the Dramatiq worker in this process (its own threads, real RabbitMQ, real MongoDB
protocol), publishes as a portal would, and reads what the worker publishes to
`dupfinder.results` and to the dead-letter queues.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dramatiq
import pika
import pymongo
import pymongo.database

from schemas.contract import RESULTS_EXCHANGE, ROUTES, dead_letter_queue, delay_queue
from schemas.messages import AssetUploaded, Payload
from schemas.publisher import PortalPublisher

AMQP_URL = os.environ.get("DUPFINDER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
WORK_QUEUES = sorted({route.queue_name for route in ROUTES.values()})
ALL_QUEUES = [q for w in WORK_QUEUES for q in (w, delay_queue(w), dead_letter_queue(w))]

Event = dict[str, Any]


class SecantusServer:
    """SecantusDB in this process, restartable on the same port and data (for outage tests)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._port = 0
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        """Start (again) and return the URL."""
        from secantus import SecantusDBServer

        self._server = SecantusDBServer(port=self._port, storage_path=str(self._folder))
        self._server.start()
        self._port = self._server.port
        self.url = str(self._server.uri)
        return self.url

    def stop(self) -> None:
        """Stop serving; the data stays in the folder."""
        if self._server is not None:
            self._server.stop()
            self._server = None


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl -q ARGS` on the shared node; returns what it printed."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


@contextlib.contextmanager
def own_vhost(prefix: str) -> Iterator[str]:
    """A vhost of a test's own on the shared node (guest may use it), deleted after; yields
    its AMQP URL. What runs there cannot meet the queues the other tests purge."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(name, '')}"
    finally:
        rabbitmqctl("delete_vhost", name)


def amqp_connection() -> pika.BlockingConnection:
    """A connection to the test RabbitMQ, failing the test clearly when it is down."""
    try:
        return pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as e:
        raise RuntimeError(
            f"RabbitMQ is not reachable at {AMQP_URL}: start it (rabbitmq-server -detached)"
        ) from e


class Harness:
    """One worker plus the portal's view of the wire."""

    def __init__(self, mongo_url: str, database: str) -> None:
        self.mongo_url = mongo_url
        self.database = database
        self.db: pymongo.database.Database[dict[str, Any]] = pymongo.MongoClient(
            mongo_url, tz_aware=True
        )[database]
        self._connection = amqp_connection()
        self._channel = self._connection.channel()
        self._channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
        self._results_queue = declared.method.queue
        self._channel.queue_bind(self._results_queue, RESULTS_EXCHANGE, routing_key="#")
        self._results = self._channel.consume(self._results_queue, inactivity_timeout=0.05)
        self._events: dict[str, list[Event]] = defaultdict(list)
        self._dead: list[tuple[str, bytes]] = []
        self.publisher = PortalPublisher(AMQP_URL)
        self.worker: dramatiq.Worker | None = None

    # ----- life cycle -------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(cls, mongo_url: str, database: str) -> Iterator[Harness]:
        """Point the worker's settings at the test services and run it."""
        os.environ["DUPFINDER_MONGODB_URL"] = mongo_url
        os.environ["DUPFINDER_MONGODB_DATABASE"] = database
        from worker.config import get_settings

        get_settings.cache_clear()
        harness = cls(mongo_url, database)
        harness.purge()
        harness.start_worker()
        try:
            yield harness
        finally:
            harness.stop_worker()
            harness.publisher.close()
            # Idle through the unit tests that run after the integration ones, its connection
            # may have been dropped for a missed heartbeat: gone either way.
            with contextlib.suppress(pika.exceptions.AMQPConnectionError):
                harness._connection.close()
            harness.db.client.drop_database(database)
            harness.db.client.close()

    def start_worker(self, threads: int = 4) -> None:
        """Start the in-process Dramatiq worker (unless it runs already)."""
        from worker import actors

        if self.worker is not None:
            return
        self.worker = dramatiq.Worker(actors.broker, worker_threads=threads, worker_timeout=100)
        self.worker.start()

    def stop_worker(self) -> None:
        """Stop it after its in-flight messages are done."""
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def purge(self) -> None:
        """Empty every dupfinder queue (they are shared with other runs on this broker)."""
        from worker import actors

        for queue in WORK_QUEUES:
            actors.broker.declare_queue(queue, ensure=True)
        for queue in ALL_QUEUES:
            self._channel.queue_purge(queue)

    # ----- publishing as a portal ---------------------------------------------------------------

    def send(self, payload: Payload, *, message_id: str | None = None) -> str:
        """Publish a payload as a portal would; returns the message id."""
        return self.publisher.publish(payload, message_id=message_id)

    def send_raw(self, queue: str, body: bytes) -> None:
        """Publish arbitrary bytes to a work queue (hostile input)."""
        self._channel.basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        )

    def upload(self, portal: str, asset_id: str, source: Path | str, **fields: Any) -> str:
        """Publish `asset-uploaded` for a file; returns the message id."""
        fields.setdefault("uploaded_at", datetime(2024, 1, 1, tzinfo=UTC))
        return self.send(
            AssetUploaded(portal_id=portal, asset_id=asset_id, source=str(source), **fields)
        )

    # ----- reading what the worker did ----------------------------------------------------------

    def _pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            method, _props, body = next(self._results)
            if method is not None:
                self._channel.basic_ack(method.delivery_tag)
                event = json.loads(body)
                # Contract v2: `<portal_id>.<event type>`, and the portal is the body's own.
                portal, _, kind = method.routing_key.partition(".")
                assert portal == event.get("portal_id"), (method.routing_key, event)
                event["_type"] = kind
                self._events[portal].append(event)
            elif time.monotonic() >= deadline:
                return

    def events(self, portal: str, kind: str | None = None) -> list[Event]:
        """Events received so far for `portal`, optionally of one type."""
        self._pump(0.05)
        return [e for e in self._events[portal] if kind is None or e["_type"] == kind]

    def wait_for(
        self,
        portal: str,
        kind: str | tuple[str, ...],
        where: Callable[[Event], bool] = lambda e: True,
        *,
        count: int = 1,
        timeout: float = 15.0,
    ) -> list[Event]:
        """Wait until `count` events of `kind` (or of any of several kinds) for `portal` match
        `where`; return them in arrival order."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self._events[portal] if e["_type"] in kinds and where(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                received = Counter(e["_type"] for e in self._events[portal])
                last = [
                    {k: e.get(k) for k in ("_type", "asset_id", "reason", "detail") if k in e}
                    for e in self._events[portal][-5:]
                ]
                raise AssertionError(
                    f"{len(found)} of {count} x {kind} for {portal} after {timeout}s; "
                    f"received {dict(received)}, the last: {last}"
                )
            self._pump(0.2)

    def dead_body(
        self, queue: str, matches: Callable[[bytes], bool], timeout: float = 15.0
    ) -> bytes:
        """Wait until a body that `matches` is in `queue`'s dead-letter queue; return it."""
        deadline = time.monotonic() + timeout
        xq = dead_letter_queue(queue)
        while True:
            for q, body in self._dead:
                if q == xq and matches(body):
                    return body
            method, _props, body = self._channel.basic_get(xq, auto_ack=True)
            if method is not None:
                self._dead.append((xq, body))
                continue
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching message reached {xq} in {timeout}s")
            time.sleep(0.1)

    def dead_letter(self, queue: str, message_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until the message with this id is dead-lettered; return its envelope."""

        def has_id(body: bytes) -> bool:
            envelope = _try_json(body)
            return isinstance(envelope, dict) and envelope.get("message_id") == message_id

        result: dict[str, Any] = json.loads(self.dead_body(queue, has_id, timeout))
        return result

    def queue_depth(self, queue: str) -> int:
        """Messages ready in `queue`."""
        return int(self._channel.queue_declare(queue, passive=True).method.message_count)

    def asset(self, portal: str, asset_id: str) -> dict[str, Any] | None:
        """The stored asset document."""
        return self.db.assets.find_one({"portal_id": portal, "asset_id": asset_id}, {"_id": 0})


def _try_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
