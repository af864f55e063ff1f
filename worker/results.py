"""Publishing result events to the `dupfinder.results` topic exchange, with publisher confirms.

pika connections are not thread-safe and block, so one dedicated thread owns the connection and
every publish is handed to it; coroutines await the confirm without blocking the event loop.
That thread also services the connection's heartbeats while nothing is published, so an idle
worker's connection stays open (`amqp_owner`). A publish that is not confirmed raises
`PublishFailed`, so the message that produced the event is retried rather than acknowledged
with its answer lost.

The events waiting when the thread gets to them are published together and their confirms
awaited once. pika's blocking channel waits for each confirm before the next publish, and a
portal's durable queue confirms only once the event is on disk: one at a time, the outcomes of a
write batch waited about 10 ms each here, and each cost RabbitMQ a disk sync of its own
(docs/hashing.md). So the events go out through the blocking channel's underlying channel
(`_impl`, pika 1.x, pinned below 2), whose confirms this module counts itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from schemas.contract import RESULTS_EXCHANGE
from schemas.events import Event
from schemas.publisher import node_parameters
from worker.amqp_owner import ConnectionThread, keep_alive, service_interval_s
from worker.core.errors import PublishFailed

log = logging.getLogger(__name__)

#: Longest wait for one publish and its confirm (pika's own timeouts come first).
PUBLISH_TIMEOUT_S = 120.0


@dataclass(eq=False)
class _Outgoing:
    """An event waiting to be published, and its caller's wait for the confirm."""

    routing_key: str
    body: bytes
    confirmed: Future[None] = field(default_factory=Future)


class ResultPublisher:
    """Publishes events persistently; one instance per worker process."""

    def __init__(self, amqp_url: str, exchange: str = RESULTS_EXCHANGE) -> None:
        self._parameters = node_parameters(amqp_url)
        self._exchange = exchange
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._outbox: list[_Outgoing] = []
        self._outbox_lock = threading.Lock()
        #: The current channel's publishes not yet confirmed, by delivery tag.
        self._unconfirmed: dict[int, _Outgoing] = {}
        self._last_tag = 0
        self._thread = ConnectionThread(
            "dupfinder-publish", self._service, service_interval_s(self._parameters[0].heartbeat)
        )

    async def publish(self, event: Event) -> None:
        """Publish `event` under its routing key and wait until RabbitMQ confirms it."""
        body = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
        await self.publish_raw(event.routing_key, body)

    async def publish_raw(self, routing_key: str, body: bytes) -> None:
        """Publish an already-encoded event body (a stored command outcome, for instance)."""
        await asyncio.wrap_future(self._send(routing_key, body))

    def publish_blocking(self, event: Event) -> None:
        """`publish` for threads that are not on an event loop (the message consumers)."""
        body = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
        try:
            self._send(event.routing_key, body).result(PUBLISH_TIMEOUT_S)
        except TimeoutError as e:
            raise PublishFailed(f"no confirm for {event.routing_key} in time") from e

    def _send(self, routing_key: str, body: bytes) -> Future[None]:
        """Queue an event for the publishing thread; the future ends with its confirm."""
        outgoing = _Outgoing(routing_key, body)
        with self._outbox_lock:
            self._outbox.append(outgoing)
        self._thread.submit(self._flush)  # finds the outbox empty if an earlier flush took it
        return outgoing.confirmed

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
            selected: list[object] = []

            def on_select_ok(frame: pika.frame.Method) -> None:
                selected.append(frame)
                self._wake()

            channel._impl.confirm_delivery(
                ack_nack_callback=self._on_confirm, callback=on_select_ok
            )
            self._wait(channel, lambda: bool(selected), "RabbitMQ did not enter confirm mode")
            self._unconfirmed, self._last_tag = {}, 0
            self._channel = channel
        return self._channel

    def _flush(self) -> None:
        """Publish every event waiting, then wait for their confirms (on the publishing thread)."""
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
        last_error: Exception | None = None
        for _attempt in range(2):  # a connection lost meanwhile (a broker restart) gets one redo
            batch = [outgoing for outgoing in batch if not outgoing.confirmed.done()]
            if not batch:
                return
            try:
                channel = self._channel_for_publish()
                for outgoing in batch:
                    self._last_tag += 1
                    self._unconfirmed[self._last_tag] = outgoing
                    channel._impl.basic_publish(
                        exchange=self._exchange,
                        routing_key=outgoing.routing_key,
                        body=outgoing.body,
                        properties=pika.BasicProperties(
                            delivery_mode=pika.DeliveryMode.Persistent,
                            content_type="application/json",
                            type=outgoing.routing_key,
                        ),
                    )
                self._wait(channel, lambda: not self._unconfirmed, "no confirm came in time")
                return
            except (pika.exceptions.AMQPError, OSError) as e:
                last_error = e
                log.warning("publishing %d events failed (%s); reconnecting", len(batch), e)
                self._reset()
        for outgoing in batch:
            if not outgoing.confirmed.done():
                outgoing.confirmed.set_exception(
                    PublishFailed(
                        f"RabbitMQ did not confirm {outgoing.routing_key}: {last_error!r}"
                    )
                )

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        """A confirm (or refusal) of one publish, or of every one up to a tag (`multiple`)."""
        method = frame.method
        tag = method.delivery_tag
        tags = [t for t in self._unconfirmed if t <= tag] if method.multiple else [tag]
        for t in tags:
            outgoing = self._unconfirmed.pop(t, None)
            if outgoing is None or outgoing.confirmed.done():
                continue
            if isinstance(method, pika.spec.Basic.Nack):
                outgoing.confirmed.set_exception(
                    PublishFailed(f"RabbitMQ refused {outgoing.routing_key} (nack)")
                )
            else:
                outgoing.confirmed.set_result(None)
        if not self._unconfirmed:
            self._wake()

    def _wake(self) -> None:
        """End `_wait`'s current wait at once: the blocking connection returns from
        `process_data_events` early only for its own events, such as a timer that is due."""
        if self._connection is not None:
            self._connection.call_later(0, _nothing)

    def _wait(self, channel: BlockingChannel, done: Callable[[], bool], failure: str) -> None:
        """Let the connection process frames until `done()`, for at most `PUBLISH_TIMEOUT_S`;
        raises as pika would if the channel or the connection closes meanwhile."""
        assert self._connection is not None
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        while not done():
            if channel.is_closed:  # e.g. the exchange deleted under it (404): a new one redoes
                raise pika.exceptions.ChannelWrongStateError(f"the channel closed: {failure}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(failure)
            self._connection.process_data_events(time_limit=min(remaining, 1.0))

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


def _nothing() -> None:
    """A timer's callback that only wakes the blocking connection."""
