"""Publishing result events to the `dupfinder.results` topic exchange, with publisher confirms.

pika connections are not thread-safe and block, so one dedicated thread owns the connection and
every publish is handed to it; coroutines await the confirm without blocking the event loop.
That thread also services the connection's heartbeats while nothing is published, so an idle
worker's connection stays open (`amqp_owner`). A publish that is not confirmed raises
`PublishFailed`, so the message that produced the event is retried rather than acknowledged
with its answer lost.
"""

from __future__ import annotations

import json
import logging

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from schemas.contract import RESULTS_EXCHANGE
from schemas.events import Event
from schemas.publisher import node_parameters
from worker.amqp_owner import ConnectionThread, keep_alive, service_interval_s
from worker.core.errors import PublishFailed

log = logging.getLogger(__name__)

#: Longest wait for one publish and its confirm (pika's own timeouts come first).
PUBLISH_TIMEOUT_S = 120.0


class ResultPublisher:
    """Publishes events persistently; one instance per worker process."""

    def __init__(self, amqp_url: str, exchange: str = RESULTS_EXCHANGE) -> None:
        self._parameters = node_parameters(amqp_url)
        self._exchange = exchange
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._thread = ConnectionThread(
            "dupfinder-publish", self._service, service_interval_s(self._parameters[0].heartbeat)
        )

    async def publish(self, event: Event) -> None:
        """Publish `event` under its routing key and wait until RabbitMQ confirms it."""
        body = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
        await self.publish_raw(event.routing_key, body)

    async def publish_raw(self, routing_key: str, body: bytes) -> None:
        """Publish an already-encoded event body (a stored command outcome, for instance)."""
        await self._thread.call_async(lambda: self._publish_blocking(routing_key, body))

    def publish_blocking(self, event: Event) -> None:
        """`publish` for threads that are not on an event loop (the message consumers)."""
        body = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
        try:
            self._thread.call(
                lambda: self._publish_blocking(event.routing_key, body), PUBLISH_TIMEOUT_S
            )
        except TimeoutError as e:
            raise PublishFailed(f"no confirm for {event.routing_key} in time") from e

    def declare(self) -> None:
        """Declare the results exchange now (at boot), so portals can bind before the first
        result: a portal user with the permissions of a multi-tenant deployment cannot."""
        try:
            self._thread.call(self._channel_for_publish, PUBLISH_TIMEOUT_S)
        except (pika.exceptions.AMQPError, OSError, TimeoutError) as e:
            log.warning(
                "could not declare %s at boot (%s); the first publish will", self._exchange, e
            )

    @property
    def connection(self) -> pika.BlockingConnection | None:
        """The open connection, if any (for tests and probes)."""
        return self._connection

    def _channel_for_publish(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self._reset()
            self._connection = pika.BlockingConnection(self._parameters)
            channel = self._connection.channel()
            channel.exchange_declare(self._exchange, exchange_type="topic", durable=True)
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def _publish_blocking(self, routing_key: str, body: bytes) -> None:
        last_error: Exception | None = None
        for _attempt in range(2):  # a connection lost meanwhile (a broker restart) gets one redo
            try:
                self._channel_for_publish().basic_publish(
                    exchange=self._exchange,
                    routing_key=routing_key,
                    body=body,
                    properties=pika.BasicProperties(
                        delivery_mode=pika.DeliveryMode.Persistent,
                        content_type="application/json",
                        type=routing_key,
                    ),
                )
                return
            except (pika.exceptions.AMQPError, OSError) as e:
                last_error = e
                log.warning("publishing %s failed (%s); reconnecting", routing_key, e)
                self._reset()
        raise PublishFailed(f"RabbitMQ did not confirm {routing_key}: {last_error!r}")

    def _service(self) -> None:
        keep_alive(self._connection, self._reset, "result publisher's")

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # closing a broken connection may fail in many ways; it is gone
                log.debug("closing a broken publisher connection failed", exc_info=True)

    def close(self) -> None:
        """Close the connection and stop the publishing thread."""
        self._thread.stop(self._reset)
