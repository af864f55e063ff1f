"""Idle connections stay open: heartbeats are serviced while nothing is published."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from dramatiq.message import Message

from schemas.events import AssetHashed
from schemas.publisher import with_connection_defaults
from tests.harness import AMQP_URL
from worker.broker import DupfinderBroker
from worker.results import ResultPublisher

#: RabbitMQ closes a connection that misses two heartbeats: 1 s heartbeats, idle for 6 s.
HEARTBEAT_URL = with_connection_defaults(
    AMQP_URL + ("&" if "?" in AMQP_URL else "?") + "heartbeat=1"
)
IDLE_S = 6.0


def _event(portal: str) -> AssetHashed:
    return AssetHashed(portal_id=portal, asset_id="a", phash="8" * 16, width=1, height=1)


def test_an_idle_result_publisher_keeps_its_connection(
    portal: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = ResultPublisher(HEARTBEAT_URL)
    caplog.set_level(logging.INFO)
    try:
        asyncio.run(publisher.publish(_event(portal)))
        first = publisher.connection
        time.sleep(IDLE_S)
        asyncio.run(publisher.publish(_event(portal)))
        assert publisher.connection is first
        assert first is not None and first.is_open
    finally:
        publisher.close()
    noisy = [r for r in caplog.records if r.levelno >= logging.INFO and "pika" not in r.name]
    assert noisy == [], [r.getMessage() for r in noisy]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


def test_an_idle_broker_keeps_one_publishing_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = DupfinderBroker(url=HEARTBEAT_URL, confirm_delivery=True, middleware=[])
    caplog.set_level(logging.DEBUG, logger="dramatiq")
    queue = "dupfinder.test-heartbeats"
    try:
        broker.declare_queue(queue, ensure=True)
        message: Message[None] = Message(
            queue_name=queue, actor_name="none", args=(), kwargs={}, options={}
        )
        broker.enqueue(message)
        (connection,) = broker.connections
        time.sleep(IDLE_S)
        broker.enqueue(message.copy(), delay=10)
        assert broker.connections == {connection}
        assert connection.is_open
        broker.flush(queue)
    finally:
        broker.close()
    retried = [r for r in caplog.records if "closed connection" in r.getMessage()]
    assert retried == [], [r.getMessage() for r in retried]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


def test_a_connection_takes_the_first_node_that_answers(mongo_url: str) -> None:
    import socket

    from schemas.publisher import connect
    from tests.cli import dupfinder

    with socket.socket() as closed:  # a loopback port nothing listens on: that node is down
        closed.bind(("127.0.0.1", 0))
        down = f"amqp://guest:guest@127.0.0.1:{closed.getsockname()[1]}/%2F"
    nodes = f"{down},{AMQP_URL}"
    connection = connect(nodes)
    try:
        assert connection.is_open
    finally:
        connection.close()
    checked = dupfinder(
        "check", env={"DUPFINDER_AMQP_URL": nodes, "DUPFINDER_MONGODB_URL": mongo_url}
    )
    assert checked.returncode == 0, checked.stderr
