"""Every queue the worker uses (and its results exchange), declared once at start, and a queue
refused when it exists otherwise.

A queue's type is fixed when it is first declared: RabbitMQ cannot turn a classic queue into a
quorum queue, and answers a declaration with other arguments by closing the channel (406). The
worker's processes would retry such a declaration every few seconds forever, so `dupfinder
worker` and `dupfinder check` declare everything first and stop with what to do instead.
"""

from __future__ import annotations

import pika
import pika.exceptions

from schemas.contract import RESULTS_EXCHANGE, ROUTES, QueueType, queue_declarations
from schemas.publisher import connect
from worker.config import Settings

_OTHER: dict[QueueType, QueueType] = {"classic": "quorum", "quorum": "classic"}


class QueueMismatch(Exception):
    """A queue exists with arguments other than those this worker declares; the message says
    which queue, what it is, and how to migrate it."""


def declare_queues(settings: Settings) -> list[str]:
    """Declare every queue of every route as `settings` say, and the results exchange, so
    that portals can bind before any worker process has booted (idempotent); returns the
    queues' names.

    Raises `QueueMismatch` for the first queue that exists with other arguments, and
    `pika.exceptions.AMQPError` when RabbitMQ cannot be reached.
    """
    queue_type, delivery_limit = settings.queue_type, settings.delivery_limit
    connection = connect(settings.amqp_url_with_defaults)
    declared = []
    try:
        connection.channel().exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        for work_queue in sorted({route.queue_name for route in ROUTES.values()}):
            wanted = queue_declarations(work_queue, queue_type, delivery_limit)
            for name, arguments in wanted.items():
                channel = connection.channel()
                try:
                    channel.queue_declare(name, durable=True, arguments=arguments)
                except pika.exceptions.ChannelClosedByBroker as e:
                    if e.reply_code != 406:
                        raise
                    raise _mismatch(connection, name, work_queue, queue_type, e) from None
                channel.close()
                declared.append(name)
    finally:
        if connection.is_open:
            connection.close()
    return declared


def _mismatch(
    connection: pika.BlockingConnection,
    name: str,
    work_queue: str,
    queue_type: QueueType,
    refusal: pika.exceptions.ChannelClosedByBroker,
) -> QueueMismatch:
    """Say what `name` is, found by declaring it as the other type would (a declaration equal
    to the existing one changes nothing)."""
    other = _OTHER[queue_type]
    channel = connection.channel()
    try:
        channel.queue_declare(
            name, durable=True, arguments=queue_declarations(work_queue, other)[name]
        )
    except pika.exceptions.ChannelClosedByBroker:
        what = f"with other arguments ({refusal.reply_text})"
    else:
        channel.close()
        what = f"as a {other} queue"
    return QueueMismatch(
        f"queue {name!r} exists {what}, but DUPFINDER_QUEUE_TYPE={queue_type} declares it "
        f"otherwise; RabbitMQ cannot change a queue's type. To migrate: stop the portals' "
        f"publishing and let the old workers drain it (`dupfinder status` shows 0 ready and "
        f"0 delayed), delete it (`rabbitmqctl delete_queue {name}`, and the same for the rest "
        f"of {work_queue}.*), then start this worker, which declares them again. Or keep "
        f"DUPFINDER_QUEUE_TYPE={other}."
    )
