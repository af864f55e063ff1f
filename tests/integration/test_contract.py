"""The contract's queue declarations are the worker's, as RabbitMQ itself judges them."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest

from schemas.contract import ROUTES, dead_letter_queue, queue_declarations
from tests.harness import Harness, amqp_connection


def test_every_queue_declared_with_the_contracts_arguments_is_accepted(harness: Harness) -> None:
    # The harness's worker declared its queues; RabbitMQ refuses any other arguments (406)
    connection = amqp_connection()
    try:
        channel = connection.channel()
        for queue in {route.queue_name for route in ROUTES.values()}:
            for name, arguments in queue_declarations(queue).items():
                channel.queue_declare(name, durable=True, arguments=arguments)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare(dead_letter_queue("dupfinder.assets"), durable=True)
        assert refused.value.reply_code == 406
    finally:
        connection.close()
