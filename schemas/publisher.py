"""A small typed publisher for Python portals.

Portals in other languages publish the same envelope with any AMQP client (see the README); this
module is that recipe in Python, with publisher confirms so `publish` returns only once RabbitMQ
has taken responsibility for the message.
"""

from __future__ import annotations

import contextlib
import json
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika

from schemas.contract import ROUTES, ActorRoute, QueueType, queue_arguments
from schemas.envelope import build_envelope
from schemas.messages import Payload


def with_connection_defaults(amqp_url: str, *, blocked_connection_timeout_s: int = 300) -> str:
    """`amqp_url` (one node's URL or several, comma-separated) plus the connection options that
    keep pika from hanging, unless given.

    Without `blocked_connection_timeout`, a publish blocks forever under a RabbitMQ memory or
    disk alarm; without `heartbeat`, a dead peer is noticed only by TCP, minutes later.
    """
    urls = []
    for url in amqp_url.split(","):
        parts = urlsplit(url.strip())
        query = dict(parse_qsl(parts.query))
        query.setdefault("heartbeat", "60")
        query.setdefault("blocked_connection_timeout", str(blocked_connection_timeout_s))
        urls.append(urlunsplit(parts._replace(query=urlencode(query))))
    return ",".join(urls)


def node_parameters(amqp_url: str) -> list[pika.URLParameters]:
    """The connection parameters of every node `amqp_url` names (comma-separated), in order."""
    return [pika.URLParameters(url.strip()) for url in amqp_url.split(",") if url.strip()]


def connect(amqp_url: str) -> pika.BlockingConnection:
    """A blocking connection to the first node of `amqp_url` that answers."""
    return pika.BlockingConnection(node_parameters(amqp_url))


def amqp_login(parameters: pika.connection.Parameters) -> str | None:
    """The user a connection logs in as: what its messages carry as AMQP `user_id` (RabbitMQ
    refuses any other), and what `DUPFINDER_PORTAL_USERS` authorises by."""
    return str(getattr(parameters.credentials, "username", "")) or None


class PortalPublisher:
    """Publishes payloads to the worker's queues over one blocking AMQP connection.

    Not thread-safe (pika connections are not): use one publisher per thread.
    """

    def __init__(
        self, amqp_url: str, *, declare: bool = True, queue_type: QueueType = "classic"
    ) -> None:
        parameters = node_parameters(with_connection_defaults(amqp_url))
        #: Every message says who published it (AMQP `user_id`, which RabbitMQ checks against
        #: the connection's login): what `DUPFINDER_PORTAL_USERS` authorises by.
        self.user_id = amqp_login(parameters[0])
        self._connection = pika.BlockingConnection(parameters)
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        # Declare with the worker's exact arguments, so a portal that starts first neither loses
        # messages to a missing queue nor makes the worker's declaration fail with 406. A portal
        # user of a multi-tenant deployment may not declare (no configure permission on the work
        # queues): `declare=False`, and the worker declares them at boot.
        if declare:
            for queue in {route.queue_name for route in ROUTES.values()}:
                arguments = queue_arguments(queue, queue_type)
                self._channel.queue_declare(queue, durable=True, arguments=arguments)

    def publish(
        self, payload: Payload, *, message_id: str | None = None, route: ActorRoute | None = None
    ) -> str:
        """Publish `payload` persistently and wait for the broker's confirm.

        `route` overrides the payload's usual actor (e.g. `BACKFILL_ROUTE`). Returns the message
        id. Raises `pika.exceptions.AMQPError` subclasses when the broker refuses or the
        connection fails; the message then was not accepted.
        """
        envelope = build_envelope(payload, message_id=message_id, route=route)
        self._channel.basic_publish(
            exchange="",
            routing_key=envelope["queue_name"],
            body=json.dumps(envelope, separators=(",", ":")).encode(),
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                message_id=envelope["message_id"],
                user_id=self.user_id,
            ),
            mandatory=True,
        )
        return str(envelope["message_id"])

    def close(self) -> None:
        """Close the connection (idempotent). A connection the broker or the network already
        dropped (a missed heartbeat during a long idle spell) is only found dropped here: it is
        gone either way, so that is not an error."""
        if self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPConnectionError):
                self._connection.close()

    def __enter__(self) -> PortalPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
