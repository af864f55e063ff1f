"""The Dramatiq broker: RabbitMQ with confirms, a strict envelope and retries that cannot vanish.

Three defaults of Dramatiq lose or stall messages (RELIABILITY-NOTES.md); each is closed here:
- the JSON decoder accepts any dict, and a malformed envelope (`"options": null`, a foreign
  `queue_name`, a missing `message_id`) can crash consumer threads: `StrictEncoder` and
  `StrictConsumer` dead-letter such bodies instead;
- a retry whose re-enqueue fails is logged and the original acknowledged, so it ends in no queue:
  `SafeRetries` fails the message instead, which dead-letters it;
- publishes are unconfirmed: the broker is built with `confirm_delivery=True`.

Dramatiq declares classic queues only; with `DUPFINDER_QUEUE_TYPE=quorum` every queue is
declared as a quorum queue here (`schemas.contract` holds the arguments), and delayed messages
wait in quorum queues of fixed TTL instead of unacknowledged in a worker's memory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import partial
from typing import Any

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.encoder import JSONEncoder, MessageData
from dramatiq.errors import ActorNotFound, ConnectionClosed, DecodeError
from dramatiq.middleware import (
    AsyncIO,
    CurrentMessage,
    Middleware,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from pydantic import ValidationError

from schemas.contract import (
    DEFAULT_DELIVERY_LIMIT,
    QueueType,
    queue_arguments,
    queue_declarations,
    wait_queue,
    wait_tier,
)
from schemas.envelope import Envelope
from schemas.publisher import amqp_login
from worker.amqp_owner import ConnectionThread, keep_alive, service_interval_s
from worker.config import Settings
from worker.core.errors import describe
from worker.stopping import GracefulStop

log = logging.getLogger(__name__)

#: Publishing attempts of one enqueue, each on a fresh connection after a failure.
_ENQUEUE_ATTEMPTS = 6


#: Headers every dead letter the worker makes carries: why it died, in words any AMQP tool shows.
REASON_HEADER = "x-dupfinder-reason"
DETAIL_HEADER = "x-dupfinder-detail"
DEAD_AT_HEADER = "x-dupfinder-dead-at"
#: How much of a detail a header keeps.
DETAIL_HEADER_CHARS = 1000

_decoding = threading.local()
"""The last decode failure of this consumer thread: (reason code, detail)."""


def mark_dead(message: Any, reason: str, detail: str) -> None:
    """Say why `message` is about to be dead-lettered (read by `StrictConsumer.nack`)."""
    if message is not None:
        message.dead_letter_cause = (reason, detail)


class StrictEncoder(JSONEncoder):
    """JSON, plus a refusal of every envelope that is not exactly the contract's shape.

    Errors quote at most a short prefix of the body: a 10 MB junk message must not become a
    10 MB log line.
    """

    def decode(self, data: bytes) -> MessageData:
        try:
            message = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            reason = f"not UTF-8 JSON ({e.__class__.__name__}): {data[:80]!r}"
            _decoding.failure = ("malformed_envelope", reason)
            log.error("dead-lettering an undecodable body: %s", reason)
            raise DecodeError(reason, data[:80], e) from None
        try:
            Envelope.model_validate(message)
        except ValidationError as e:
            reason = describe(e)
            _decoding.failure = ("malformed_envelope", f"malformed envelope: {reason}")
            log.error("dead-lettering a malformed envelope: %s", reason)
            raise DecodeError(f"malformed envelope: {reason}", data[:80], e) from None
        result: MessageData = message
        return result


class StrictConsumer(_RabbitmqConsumer):
    """Refuses messages that do not belong to the queue they were consumed from, and keeps who
    published each one.

    Dramatiq routes a message by the `queue_name` in its body; a body naming another queue, or an
    actor that lives on another queue, is a publisher bug that would otherwise kill worker
    threads or bypass queue separation. Such messages are rejected to the dead-letter queue.

    Dramatiq drops a delivery's AMQP properties; the `user_id` one (which RabbitMQ guarantees is
    the publishing connection's login) is kept as the message's `publisher`, for the portal
    authorisation (`DUPFINDER_PORTAL_USERS`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_user_id: str | None = None
        self._last_body = b""
        deliveries = self.iterator

        def remembered() -> Any:
            for method, properties, body in deliveries:
                if method is not None:
                    self._last_user_id = getattr(properties, "user_id", None)
                    self._last_body = body
                    _decoding.failure = None
                yield method, properties, body

        self.iterator = remembered()

    def __next__(self) -> Any:
        message = super().__next__()
        if message is None:
            return None
        message.publisher = self._last_user_id
        # Dead letters are the bytes as delivered, as RabbitMQ's own dead-lettering keeps them.
        message.delivered_body = self._last_body
        problem = None
        if message.queue_name != self.queue_name:
            problem = f"queue_name {message.queue_name!r} does not match queue {self.queue_name!r}"
        else:
            try:
                actor = self.broker.get_actor(message.actor_name)
            except ActorNotFound:
                problem = f"unknown actor {message.actor_name!r}"
            else:
                if actor.queue_name != q_name(self.queue_name):
                    problem = f"actor {actor.actor_name!r} does not consume {self.queue_name!r}"
        if problem is None:
            return message
        log.error("dead-lettering message %s: %s", message.message_id, problem)
        mark_dead(message, "invalid_message", problem)
        self.nack(message)
        return None

    def nack(self, message: Any) -> None:
        """Dead-letter a message as a copy that says why, published to `<queue>.XQ` with
        confirms before the original is acknowledged (RabbitMQ's own dead-lettering, which
        knows no reason, is what remains when the copy cannot be published)."""
        reason, detail = getattr(message, "dead_letter_cause", None) or (
            "failed",
            "dead-lettered by the worker; see its log for the message id",
        )
        try:
            self._publish_dead(
                getattr(message, "delivered_body", None) or message.encode(), reason, detail
            )
        except Exception:  # any failure to publish the copy: fall back to RabbitMQ's own
            log.warning("could not publish the dead letter of %s; nacking it", message.message_id)
            super().nack(message)
            return
        self.ack(message)

    def _nack(self, tag: int) -> None:
        failure = getattr(_decoding, "failure", None)
        if failure is not None:
            _decoding.failure = None
            try:  # an undecodable body, refused on this consumer thread just now
                self._publish_dead(self._last_body, *failure)
            except Exception:  # as in `nack`
                log.warning("could not publish the dead letter of an undecodable body")
            else:
                self.connection.add_callback_threadsafe(partial(self.channel.basic_ack, tag))
                return
        super()._nack(tag)

    def _publish_dead(self, body: bytes, reason: str, detail: str) -> None:
        headers = {
            REASON_HEADER: reason,
            DETAIL_HEADER: detail[:DETAIL_HEADER_CHARS],
            DEAD_AT_HEADER: int(time.time() * 1000),
        }
        self.broker.publish_dead_letter(xq_name(self.queue_name), body, headers)


class DupfinderBroker(RabbitmqBroker):
    """`RabbitmqBroker` with the strict consumer, and one publishing connection per process.

    Dramatiq opens a connection per thread that enqueues or declares (the boot thread, every
    worker thread that schedules a retry) and leaves each idle until its next use; RabbitMQ
    closes them for missed heartbeats, and the next use or the shutdown logs the errors. Here
    every operation on the broker's own connection runs on one thread that keeps it serviced
    (`amqp_owner`), so there is one such connection, and it stays open.
    """

    def __init__(
        self,
        *,
        queue_type: QueueType = "classic",
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        first = self.parameters[0] if isinstance(self.parameters, list) else self.parameters
        self.login = amqp_login(first)
        """The user this broker connects as: what its own re-publishes carry as `user_id`."""
        self._owner = ConnectionThread(
            "dupfinder-broker", self._service, service_interval_s(first.heartbeat)
        )

    @property
    def consumer_class(self) -> type[StrictConsumer]:
        return StrictConsumer

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        return self._owner.call(lambda: self._enqueue(message, delay))

    def _enqueue(self, message: Any, delay: int | None) -> Any:
        """Dramatiq's enqueue, plus the `user_id` property: a retry, a deferral or a due delayed
        message is re-published by the worker itself, and says so, so the portal authorisation
        can tell it from a portal's message that carries no identity."""
        canonical = message.queue_name
        queue = canonical
        if delay is not None and self.queue_type == "quorum":
            # The message waits in a queue whose TTL dead-letters it into `canonical`; it
            # travels as itself, due on arrival.
            queue = wait_queue(canonical, wait_tier(delay))
            options = {key: value for key, value in message.options.items() if key != "eta"}
            message = message._replace(options=options)
        elif delay is not None:
            queue = dq_name(canonical)
            message = message.copy(queue_name=queue, options={"eta": current_millis() + delay})
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            priority=message.options.get("broker_priority"),
            user_id=self.login,
        )
        for attempt in range(1, _ENQUEUE_ATTEMPTS + 1):
            try:
                self.declare_queue(canonical, ensure=True)
                self.emit_before("enqueue", message, delay)
                self.channel.basic_publish(
                    exchange="",
                    routing_key=queue,
                    body=message.encode(),
                    properties=properties,
                    mandatory=self.confirm_delivery,
                )
                self.emit_after("enqueue", message, delay)
                return message
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
                del self.connection  # the next attempt opens a new connection and channel
                if isinstance(e, pika.exceptions.UnroutableError):
                    self.queues_pending.add(q_name(queue))  # the queue vanished: declare again
                if attempt == _ENQUEUE_ATTEMPTS:
                    raise ConnectionClosed(e) from None
        raise AssertionError("unreachable")

    def _build_queue_arguments(self, queue_name: str) -> dict[str, str | int]:
        return queue_arguments(queue_name, self.queue_type, self.delivery_limit)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        """The `.XQ`, and on quorum queues the wait queues too: every declaration of the
        contract's that Dramatiq does not make itself (made where it makes the rest, so they
        are retried alike and exist before a delay needs them)."""
        declarations = queue_declarations(queue_name, self.queue_type, self.delivery_limit)
        dead = xq_name(queue_name)
        declared = self.channel.queue_declare(
            queue=dead, durable=True, arguments=declarations.pop(dead)
        )
        for name in (queue_name, dq_name(queue_name)):  # Dramatiq's own
            declarations.pop(name)
        for name, arguments in declarations.items():
            self.channel.queue_declare(queue=name, durable=True, arguments=arguments)
        return declared

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        if not ensure:  # bookkeeping only, no connection
            return RabbitmqBroker.declare_queue(self, queue_name)
        return self._owner.call(lambda: RabbitmqBroker.declare_queue(self, queue_name, ensure=True))

    def publish_dead_letter(self, queue: str, body: bytes, headers: dict[str, Any]) -> None:
        """Publish a dead letter to `queue` and wait for RabbitMQ's confirm."""

        def publish() -> None:
            self.declare_queue(q_name(queue), ensure=True)
            self.channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=body,
                properties=pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                    headers=headers,
                    user_id=self.login,
                ),
                mandatory=True,
            )

        self._owner.call(publish, 60.0)

    def get_queue_message_counts(self, queue_name: str) -> tuple[int, int, int]:
        return self._owner.call(lambda: RabbitmqBroker.get_queue_message_counts(self, queue_name))

    def flush(self, queue_name: str) -> None:
        self._owner.call(lambda: RabbitmqBroker.flush(self, queue_name))

    def flush_all(self) -> None:
        self._owner.call(lambda: RabbitmqBroker.flush_all(self))

    def close(self) -> None:
        self._owner.call(lambda: RabbitmqBroker.close(self))
        # Closed, but usable again: a process that enqueues after this reconnects.
        self._owner.call(self._forget)

    def _forget(self) -> None:
        self.state.__dict__.pop("connection", None)
        self.state.__dict__.pop("channel", None)
        self.connections.clear()
        self.channels.clear()

    def _service(self) -> None:
        keep_alive(getattr(self.state, "connection", None), self._forget, "broker's publishing")


class SafeRetries(Retries):
    """Retries whose failure to re-enqueue dead-letters the message instead of losing it."""

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except Exception:
            # Without this, Dramatiq logs the failure and acknowledges the message (issue #545).
            log.exception(
                "could not enqueue the retry of message %s; dead-lettering it", message.message_id
            )
            mark_dead(message, "retry_not_enqueued", "RabbitMQ did not take the retry")
            message.fail()


def build_broker(settings: Settings, extra_middleware: list[Middleware]) -> DupfinderBroker:
    """The broker with its middleware, in order.

    - TimeLimit: interrupts a message running past its actor's `time_limit`.
    - ShutdownNotifications: lets long work notice a SIGTERM.
    - CurrentMessage: actors read their message id for logs and idempotency.
    - AsyncIO: the event-loop thread the store and publisher live on.
    - SafeRetries: bounded backoff for transient faults, dead-lettering when exhausted.
    - GracefulStop: one bounded stop per process, however often SIGTERM arrives.
    - then `extra_middleware` (the worker's resources).
    """
    dramatiq.set_encoder(StrictEncoder())
    middleware: list[Middleware] = [
        TimeLimit(),
        ShutdownNotifications(),
        CurrentMessage(),
        AsyncIO(),
        SafeRetries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        GracefulStop(settings.stop_grace_s),
        *extra_middleware,
    ]
    return DupfinderBroker(
        url=settings.amqp_url_with_defaults.split(","),
        confirm_delivery=True,
        middleware=middleware,
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
    )
