"""The result publisher sends the events waiting together and still answers each caller once
RabbitMQ has confirmed its own event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from tests.harness import AMQP_URL
from worker.results import ResultPublisher


@pytest.fixture
def exchange() -> Iterator[tuple[str, str, BlockingChannel]]:
    """An exchange of this test's own (the worker's results exchange is shared by every test),
    a durable queue bound to all of it, and a channel to look with."""
    name = f"dupfinder.test-publisher-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.exchange_declare(name, exchange_type="topic", durable=True)
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, name, routing_key="#")
    try:
        yield name, name, channel
    finally:
        channel.queue_delete(name)
        channel.exchange_delete(name)
        connection.close()


def _count(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def test_concurrent_publishes_each_return_after_their_confirm(
    exchange: tuple[str, str, BlockingChannel],
) -> None:
    name, queue, channel = exchange
    publisher = ResultPublisher(AMQP_URL, exchange=name)

    async def publish_all() -> None:
        await asyncio.gather(
            *(publisher.publish_raw(f"p.asset.hashed.{n}", b'{"n": %d}' % n) for n in range(60))
        )

    try:
        asyncio.run(asyncio.wait_for(publish_all(), 30))
        # Every caller returned only once its event was confirmed, so all are in the queue
        assert _count(channel, queue) == 60
        bodies = set()
        for _ in range(60):
            _method, _props, body = channel.basic_get(queue, auto_ack=True)
            bodies.add(body)
        assert bodies == {b'{"n": %d}' % n for n in range(60)}
    finally:
        publisher.close()


def test_a_publish_after_its_exchange_was_deleted_goes_out_on_a_new_channel(
    exchange: tuple[str, str, BlockingChannel],
) -> None:
    name, queue, channel = exchange
    publisher = ResultPublisher(AMQP_URL, exchange=name)
    try:
        asyncio.run(publisher.publish_raw("p.asset.hashed", b"1"))
        # Given the exchange deleted under the publisher's open channel (RabbitMQ closes a
        # channel that publishes to a missing exchange)
        channel.exchange_delete(name)
        # When the next event is published, it is redone on a new channel that declares the
        # exchange again, well before the publisher's two-minute wait for a confirm
        asyncio.run(asyncio.wait_for(publisher.publish_raw("p.asset.hashed", b"2"), 20))
    finally:
        publisher.close()
    channel.queue_bind(queue, name, routing_key="#")  # the bindings went with the exchange
    assert _count(channel, queue) == 1  # the first event; the second had no binding to go to
