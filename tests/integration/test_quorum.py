"""`DUPFINDER_QUEUE_TYPE=quorum` against the real RabbitMQ: what is declared, what is refused, how
delayed retries wait, and where a message delivered too often goes. Each test has a vhost of its
own and runs `dupfinder` as its own process, as a deployment does."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pika
import pymongo
import pytest

from schemas.contract import (
    ASSETS_QUEUE,
    ROUTES,
    WAIT_TIERS_MS,
    dead_letter_queue,
    queue_arguments,
    queue_declarations,
    wait_queue,
)
from schemas.messages import AssetUploaded
from schemas.publisher import PortalPublisher
from tests.cli import dupfinder
from tests.faults.cluster import WorkerProcess, worker_env
from tests.harness import own_vhost, rabbitmqctl
from tests.images import photo, write
from tests.sources import ScriptedSource, serve

WORK_QUEUES = sorted({route.queue_name for route in ROUTES.values()})


@pytest.fixture
def vhost() -> Iterator[str]:
    """A vhost of the test's own; yields its name."""
    with own_vhost("dupfinder-quorum") as url:
        yield unquote(url.rsplit("/", 1)[1])


def url_of(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, '')}"


def listed(vhost: str) -> dict[str, dict[str, Any]]:
    """Every queue of `vhost` as RabbitMQ reports it: type, arguments and message counts."""
    rows = json.loads(
        rabbitmqctl(
            "list_queues",
            *("-p", vhost, "--formatter", "json"),
            *("name", "type", "arguments", "messages_ready", "messages_unacknowledged"),
        )
    )
    return {
        row["name"]: {**row, "arguments": {k: v for k, _type, v in row["arguments"]}}
        for row in rows
    }


def ready(vhost: str, queue: str) -> int:
    """Messages ready in `queue` now (`list_queues` counts quorum queues' a few seconds late)."""
    connection = pika.BlockingConnection(pika.URLParameters(url_of(vhost)))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def environment(vhost: str, mongo_url: str, **more: str) -> dict[str, str]:
    """A worker's environment on `vhost` with quorum queues and a database of its own."""
    more.setdefault("DUPFINDER_QUEUE_TYPE", "quorum")
    return worker_env(url_of(vhost), mongo_url, f"quorum_{uuid.uuid4().hex[:8]}", **more)


def test_every_queue_is_declared_as_a_quorum_queue_with_the_contract_arguments(
    vhost: str, mongo_url: str
) -> None:
    done = dupfinder("check", env=environment(vhost, mongo_url))
    assert done.returncode == 0, done.stderr

    queues = listed(vhost)
    expected = {
        name: arguments
        for work_queue in WORK_QUEUES
        for name, arguments in queue_declarations(work_queue, "quorum").items()
    }
    assert set(queues) == set(expected)
    for name, arguments in expected.items():
        assert queues[name]["type"] == "quorum", name
        assert queues[name]["arguments"] == arguments, name
    work = queues[ASSETS_QUEUE]["arguments"]
    assert work["x-dead-letter-strategy"] == "at-least-once"
    assert work["x-overflow"] == "reject-publish"
    assert work["x-delivery-limit"] == 20
    assert "x-max-priority" not in work
    assert len([n for n in queues if n.startswith(f"{ASSETS_QUEUE}.DQ.")]) == len(WAIT_TIERS_MS)


@pytest.mark.parametrize(("existing", "wanted"), [("classic", "quorum"), ("quorum", "classic")])
def test_a_queue_of_the_other_type_is_refused_at_start_and_left_as_it_was(
    vhost: str, mongo_url: str, existing: str, wanted: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url_of(vhost)))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(
        ASSETS_QUEUE,
        durable=True,
        arguments=queue_arguments(ASSETS_QUEUE, existing),  # type: ignore[arg-type]
    )
    channel.basic_publish("", ASSETS_QUEUE, b"waiting", pika.BasicProperties(delivery_mode=2))
    connection.close()

    env = environment(vhost, mongo_url, DUPFINDER_QUEUE_TYPE=wanted)
    started = time.monotonic()
    done = dupfinder("worker", "--processes", "1", "--threads", "1", timeout=60, env=env)
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr
    assert f"queue '{ASSETS_QUEUE}' exists as a {existing} queue" in message
    assert f"DUPFINDER_QUEUE_TYPE={wanted}" in message
    assert f"rabbitmqctl delete_queue {ASSETS_QUEUE}" in message
    assert len(message.splitlines()) == 1, message

    checked = dupfinder("check", env=env)
    assert checked.returncode == 1
    assert f"exists as a {existing} queue" in checked.stderr

    assert listed(vhost)[ASSETS_QUEUE]["type"] == existing
    assert ready(vhost, ASSETS_QUEUE) == 1  # untouched: nobody consumed from it


def test_a_retry_storm_waits_in_wait_queues_not_unacknowledged_in_the_worker(
    vhost: str, mongo_url: str, tmp_path: Path
) -> None:
    uploads, threads = 60, 4
    picture = write(tmp_path / "p.png", photo(61, size=(64, 48)))
    # Every upload fails a few times before the source answers: a storm of delayed retries.
    source = ScriptedSource(picture.read_bytes(), failures=uploads * 4, status=503)
    env = environment(
        vhost,
        mongo_url,
        DUPFINDER_MIN_BACKOFF_MS="300",
        DUPFINDER_MAX_BACKOFF_MS="5000",
        DUPFINDER_MAX_RETRIES="30",
        DUPFINDER_FETCH_TIMEOUT_S="3",
    )
    assert dupfinder("check", env=env).returncode == 0  # every queue declared before sampling
    worker = WorkerProcess(env, tmp_path / "worker.log")
    held: list[int] = []
    waiting: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        # Ready counts from AMQP (exact); unacknowledged ones only RabbitMQ's statistics know,
        # a few seconds late, which is enough for a maximum over the whole storm.
        connection = pika.BlockingConnection(pika.URLParameters(url_of(vhost)))
        channel = connection.channel()
        waits = [wait_queue(ASSETS_QUEUE, tier) for tier in WAIT_TIERS_MS]
        while not stop.is_set():
            waiting.append(
                sum(channel.queue_declare(q, passive=True).method.message_count for q in waits)
            )
            held.append(sum(q["messages_unacknowledged"] for q in listed(vhost).values()))
        connection.close()

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    db = client[env["DUPFINDER_MONGODB_DATABASE"]]
    with serve(source) as base:
        worker.start()
        sampler = threading.Thread(target=sample, daemon=True)
        try:
            with PortalPublisher(url_of(vhost), queue_type="quorum") as publisher:
                for n in range(uploads):
                    publisher.publish(
                        AssetUploaded(
                            portal_id="storm",
                            asset_id=f"a{n}",
                            source=f"{base}/{n}.png",
                            uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
                        )
                    )
            sampler.start()
            deadline = time.monotonic() + 180
            while db.assets.count_documents({"portal_id": "storm", "state": "hashed"}) < uploads:
                assert worker.alive(), worker.log_tail()
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.5)
        finally:
            stop.set()
            if sampler.is_alive():
                sampler.join(10)
            worker.terminate()
            client.drop_database(env["DUPFINDER_MONGODB_DATABASE"])
            client.close()

    assert source.requests >= uploads * 5  # every failure was retried
    # Delayed retries waited in the wait queues, not in the worker: it never held more than
    # its prefetch (two per thread), though dozens of retries were due later at once.
    assert max(waiting) >= uploads // 2, waiting
    assert max(held) <= 2 * threads, held
    assert all(ready(vhost, queue) == 0 for queue in listed(vhost)), listed(vhost)


def test_a_message_delivered_too_often_is_dead_lettered_with_its_reason(
    vhost: str, mongo_url: str
) -> None:
    env = environment(vhost, mongo_url, DUPFINDER_DELIVERY_LIMIT="2")
    assert dupfinder("check", env=env).returncode == 0
    # A portal that does not declare (the worker declared, with its limit of 2).
    with PortalPublisher(url_of(vhost), declare=False) as publisher:
        message_id = publisher.publish(
            AssetUploaded(
                portal_id="crashy",
                asset_id="a1",
                source="/nowhere/a1.png",
                uploaded_at=datetime(2024, 1, 1, tzinfo=UTC),
            )
        )

    # Three workers in a row take it and die before they acknowledge it.
    connection = pika.BlockingConnection(pika.URLParameters(url_of(vhost)))
    for _ in range(3):
        channel = connection.channel()
        method, _properties, _body = channel.basic_get(ASSETS_QUEUE, auto_ack=False)
        assert method is not None
        channel.close()  # unacknowledged: handed back, one delivery more
    time.sleep(0.5)
    assert connection.channel().basic_get(ASSETS_QUEUE, auto_ack=False)[0] is None
    connection.close()

    shown = dupfinder("dead-letters", "list", "--queue", "assets", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    letters = json.loads(shown.stdout)
    assert [letter["message_id"] for letter in letters] == [message_id]
    assert letters[0]["reason"].startswith(f"delivery_limit: delivered too often by {ASSETS_QUEUE}")
    assert ready(vhost, dead_letter_queue(ASSETS_QUEUE)) == 1  # still kept


def test_wait_queues_hand_a_delayed_message_back_to_its_work_queue(
    vhost: str, mongo_url: str
) -> None:
    env = environment(vhost, mongo_url)
    assert dupfinder("check", env=env).returncode == 0
    connection = pika.BlockingConnection(pika.URLParameters(url_of(vhost)))
    channel = connection.channel()
    channel.confirm_delivery()
    tier = WAIT_TIERS_MS[2]
    channel.basic_publish(
        "",
        wait_queue(ASSETS_QUEUE, tier),
        b"later",
        pika.BasicProperties(delivery_mode=2),
        mandatory=True,
    )
    sent = time.monotonic()
    status = dupfinder("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queues"][ASSETS_QUEUE]["delayed"] == 1  # waiting, counted
    while True:
        method, _properties, body = channel.basic_get(ASSETS_QUEUE, auto_ack=True)
        if method is not None:
            break
        assert time.monotonic() - sent < 15
        time.sleep(0.05)
    waited = time.monotonic() - sent
    connection.close()
    assert body == b"later"
    assert tier / 1000 * 0.9 <= waited < tier / 1000 + 3
