"""The typed publisher a portal uses: closing it after its connection was dropped."""

from __future__ import annotations

import socket

from schemas.publisher import PortalPublisher
from tests.harness import AMQP_URL


def test_closing_a_publisher_whose_connection_was_dropped_does_not_raise() -> None:
    # Given a publisher whose connection the network dropped while it sat idle (the broker
    # closing it for a missed heartbeat looks the same to the client: a reset socket)
    publisher = PortalPublisher(AMQP_URL, declare=False)
    transport = publisher._connection._impl._transport  # pika's socket: no public handle
    transport._sock.shutdown(socket.SHUT_RDWR)
    # When the portal closes it, it finds the connection gone, and that is not an error
    publisher.close()
    assert not publisher._connection.is_open
    publisher.close()  # and closing again does nothing
