"""Tenants are walls at the broker: real RabbitMQ users, topic permissions, and a worker that
acts for a portal only on the word of a user allowed for it (`DUPFINDER_PORTAL_USERS`).

Everything lives in a vhost of the test's own, with users of its own, and is deleted after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pymongo
import pytest

from schemas.contract import ASSETS_QUEUE, RESULTS_EXCHANGE, dead_letter_queue
from schemas.envelope import build_envelope
from schemas.messages import AssetUploaded
from tests.images import encode, photo, write
from tests.sources import ScriptedSource, serve


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Broker:
    """A vhost with a worker user and three portal-side users: acme, globex, a back office."""

    vhost: str
    password: str
    users: dict[str, str]  # role -> user name

    def url(self, role: str) -> str:
        return f"amqp://{self.users[role]}:{self.password}@127.0.0.1:5672/{quote(self.vhost, '')}"

    def connect(self, role: str) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url(role)))


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    tag = uuid.uuid4().hex[:8]
    vhost, password = f"dupfinder-test-{tag}", uuid.uuid4().hex
    users = {role: f"{role}-{tag}" for role in ("worker", "acme", "globex", "office")}
    rabbitmqctl("add_vhost", vhost)
    try:
        for role, user in users.items():
            rabbitmqctl("add_user", user, password)
            if role == "worker":
                rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
                continue
            # A portal user: its own server-named queues, publishing through the default
            # exchange, reading the results exchange; nothing it could delete or reconfigure.
            rabbitmqctl(
                "set_permissions",
                "-p",
                vhost,
                user,
                r"^amq\.gen-.*",
                r"^(amq\.default|amq\.gen-.*)$",
                r"^(dupfinder\.results|amq\.gen-.*)$",
            )
            if role != "office":
                portal = role
                pattern = rf"^{portal}\."
                rabbitmqctl(
                    "set_topic_permissions", "-p", vhost, user, RESULTS_EXCHANGE, pattern, pattern
                )
        yield Broker(vhost, password, users)
    finally:
        rabbitmqctl("delete_vhost", vhost)
        for user in users.values():
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)


@pytest.fixture(scope="module")
def worker(broker: Broker, mongo_url: str) -> Iterator[str]:
    """A worker on the vhost, with the portal users configured; yields its database name."""
    database = f"tenancy_{uuid.uuid4().hex[:8]}"
    users = broker.users
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--processes", "1", "--threads", "2"],
        env={
            **os.environ,
            "DUPFINDER_AMQP_URL": broker.url("worker"),
            "DUPFINDER_MONGODB_URL": mongo_url,
            "DUPFINDER_MONGODB_DATABASE": database,
            "DUPFINDER_MANAGEMENT_URL": "",
            "DUPFINDER_PORTAL_USERS": (
                f"{users['acme']}=acme,{users['globex']}=globex,{users['office']}=*"
            ),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The queues exist once the worker has declared them.
        connection = broker.connect("worker")
        deadline = time.monotonic() + 60
        while True:
            channel = connection.channel()
            try:
                channel.queue_declare(ASSETS_QUEUE, passive=True)
                break
            except pika.exceptions.ChannelClosedByBroker:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        connection.close()
        yield database
    finally:
        process.terminate()
        process.wait(60)
        with pymongo.MongoClient[dict[str, Any]](mongo_url) as client:
            client.drop_database(database)


class Listener:
    """A portal user's own queue on the results exchange."""

    def __init__(self, broker: Broker, role: str, binding: str) -> None:
        self.connection = broker.connect(role)
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, RESULTS_EXCHANGE, routing_key=binding)

    def events(self, seconds: float, until: int = 10**9) -> list[tuple[str, dict[str, Any]]]:
        got: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(got) < until:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            got.append((method.routing_key, json.loads(body)))
        return got

    def close(self) -> None:
        self.connection.close()


def publish(broker: Broker, role: str, payload: AssetUploaded, *, sign: bool = True) -> str:
    """Publish as `role` would with any AMQP client; `sign` sets `user_id` to its login."""
    envelope = build_envelope(payload)
    connection = broker.connect(role)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            ASSETS_QUEUE,
            json.dumps(envelope).encode(),
            pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                user_id=broker.users[role] if sign else None,
            ),
            mandatory=True,
        )
    finally:
        connection.close()
    return str(envelope["message_id"])


def upload(portal: str, asset_id: str, source: Path | str) -> AssetUploaded:
    return AssetUploaded.model_validate(
        {
            "portal_id": portal,
            "asset_id": asset_id,
            "source": str(source),
            "uploaded_at": "2024-01-01T00:00:00Z",
        }
    )


def dead_letter_ids(broker: Broker) -> set[str]:
    connection = broker.connect("worker")
    try:
        channel = connection.channel()
        ids: set[str] = set()
        while True:
            method, _props, body = channel.basic_get(dead_letter_queue(ASSETS_QUEUE))
            if method is None:
                return ids
            ids.add(json.loads(body)["message_id"])  # left unacknowledged: back on close
    finally:
        connection.close()


def test_a_portal_user_cannot_bind_to_other_portals_events(broker: Broker, worker: str) -> None:
    # The worker declares the results exchange at boot; portal users could not.
    connection = broker.connect("acme")
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    for binding in ("#", "globex.#", "*.asset.hashed"):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_bind(queue, RESULTS_EXCHANGE, routing_key=binding)
        assert refused.value.reply_code == 403
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, RESULTS_EXCHANGE, routing_key="acme.#")
    connection.close()


def test_portal_users_act_for_their_own_portal_only(
    broker: Broker, worker: str, mongo_url: str, images: Path
) -> None:
    acme, globex = Listener(broker, "acme", "acme.#"), Listener(broker, "globex", "globex.#")
    path = write(images / "a.png", photo(201))
    try:
        # acme's own upload is carried out, and acme hears of it under its own routing key
        publish(broker, "acme", upload("acme", "a1", path))
        (key, event), *_ = acme.events(30, until=1)
        assert (key, event["asset_id"]) == ("acme.asset.hashed", "a1")

        # acme acting for globex, and a message that says nobody published it, have no effect
        forged = publish(broker, "acme", upload("globex", "g1", path))
        anonymous = publish(broker, "globex", upload("globex", "g2", path), sign=False)
        deadline = time.monotonic() + 20
        dead: set[str] = set()
        while {forged, anonymous} - dead and time.monotonic() < deadline:
            dead |= dead_letter_ids(broker)
            time.sleep(0.3)
        assert {forged, anonymous} <= dead
        assert globex.events(1) == []
        with pymongo.MongoClient[dict[str, Any]](mongo_url) as client:
            assert client[worker].assets.count_documents({"portal_id": "globex"}) == 0

        # the back office may act for any portal, and a retried message (re-published by the
        # worker itself) is still carried out
        with serve(ScriptedSource(encode(photo(202)), failures=1)) as base:
            publish(broker, "office", upload("globex", "g3", f"{base}/g3.png"))
            (key, event), *_ = globex.events(30, until=1)
        assert (key, event["asset_id"]) == ("globex.asset.hashed", "g3")
        assert acme.events(0.5) == []  # and nothing of globex's reached acme
    finally:
        acme.close()
        globex.close()
