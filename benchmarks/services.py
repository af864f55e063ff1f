"""What the end-to-end benchmarks run against: a SecantusDB server and a `dupfinder worker`
process of their own, on the local RabbitMQ, and the portal's side of the wire."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

from schemas.contract import ACTORS, RESULTS_EXCHANGE, dead_letter_queue, delay_queue
from schemas.publisher import PortalPublisher

AMQP_URL = os.environ.get("DUPFINDER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def database() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A SecantusDB server in a process of its own: (URL, process)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "secantusd-py"),
                "--port",
                str(port),
                "--storage-path",
                data,
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, 30)
            yield f"mongodb://127.0.0.1:{port}/", server
        finally:
            server.terminate()
            server.wait(60)


@contextlib.contextmanager
def worker(
    mongodb_url: str, *, processes: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A `dupfinder worker` process on the benchmark's database, its queues purged first."""
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(AMQP_URL))) as connection:
        channel = connection.channel()
        for route in ACTORS.values():
            name = route.queue_name
            for queue in (name, delay_queue(name), dead_letter_queue(name)):
                # A queue no worker has declared yet (a fresh broker) closes the channel.
                if channel.is_closed:
                    channel = connection.channel()
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                    channel.queue_purge(queue)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--processes", str(processes)],
        env={
            **os.environ,
            "DUPFINDER_MONGODB_URL": mongodb_url,
            "DUPFINDER_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(60)


def resident_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    return int(match.group(1)) * 1024 if match else 0


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (Linux /proc)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


@dataclass
class Portal:
    """The portal's side: publishes payloads, and collects the result events as they come."""

    publisher: PortalPublisher
    channel: Any
    queue: str

    @classmethod
    @contextlib.contextmanager
    def open(cls, binding: str = "#") -> Iterator[Portal]:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, RESULTS_EXCHANGE, routing_key=binding)
        publisher = PortalPublisher(AMQP_URL)
        try:
            yield cls(publisher, channel, queue)
        finally:
            # Left idle through a long run, the publisher's connection may have been closed by
            # the broker for missed heartbeats: nothing is left to close then.
            with contextlib.suppress(pika.exceptions.AMQPError):
                publisher.close()
            connection.close()

    def events(self, until: Callable[[str, dict[str, Any]], bool], seconds: float) -> None:
        """Read events (event type, body) until `until` says done; fail after `seconds`."""
        deadline = time.monotonic() + seconds
        for method, _props, body in self.channel.consume(self.queue, inactivity_timeout=0.05):
            if method is not None:
                self.channel.basic_ack(method.delivery_tag)
                kind = method.routing_key.split(".", 1)[1]  # `<portal_id>.<event type>`
                if until(kind, json.loads(body)):
                    self.channel.cancel()
                    return
            elif time.monotonic() > deadline:
                self.channel.cancel()
                raise RuntimeError(f"no end of the events in {seconds} s")
