"""Uploads end to end: publish N `asset-uploaded`, wait for N `asset.hashed`.

Starts its own SecantusDB server (a MongoDB-protocol server, as a separate process) and a
`dupfinder worker` process, on the local RabbitMQ; the queues are purged first.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pika

from benchmarks import services
from schemas.contract import RESULTS_EXCHANGE
from schemas.messages import AssetUploaded
from schemas.publisher import PortalPublisher


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
    return total


@dataclass
class Run:
    """One configuration's figures."""

    label: str
    rate: float
    elapsed: float
    server_cpu: float
    worker_cpu: float


def end_to_end(n: int, files: list[Path], pure_rate: float) -> float:
    """Print and return uploads per second through the whole service, with each worker process's
    upload writes batched (the default) beside the same run with every write sent alone."""
    runs = [
        _run(
            n, files, "each write alone (DUPFINDER_WRITE_BATCH=1)", {"DUPFINDER_WRITE_BATCH": "1"}
        ),
        _run(n, files, "writes batched (the default)", {}),
    ]
    cores = os.cpu_count() or 1
    print(
        f"\n== end to end: {n} uploads of {files[0].parent.name} through RabbitMQ and "
        f"SecantusDB, {cores} worker processes on {cores} cores; pure hashing on the same files "
        f"and cores: {pure_rate:.1f} images/s, {cores / pure_rate * 1000:.1f} ms of CPU an image"
    )
    print(
        f"{'':<44} {'uploads/s':>9} {'of pure':>8} {'DB CPU/upload':>14} "
        f"{'worker CPU/upload':>18} {'rest':>6}"
    )
    for run in runs:
        rest = cores * run.elapsed - run.server_cpu - run.worker_cpu
        print(
            f"{run.label:<44} {run.rate:>9.1f} {run.rate / pure_rate:>8.0%} "
            f"{run.server_cpu / n * 1000:>11.1f} ms {run.worker_cpu / n * 1000:>15.1f} ms "
            f"{rest:>5.1f}s"
        )
    base, batched = runs
    print(
        f"batching: {batched.rate / base.rate:.2f}x the uploads/s, database CPU an upload "
        f"{base.server_cpu / max(batched.server_cpu, 1e-9):.2f}x less ('rest': RabbitMQ, this "
        "script and idle time over the run)"
    )
    return batched.rate


def _run(n: int, files: list[Path], label: str, env: dict[str, str]) -> Run:
    with (
        services.database() as (url, server),
        services.worker(url, processes=os.cpu_count() or 1, env=env) as worker,
    ):
        connection = pika.BlockingConnection(pika.URLParameters(services.AMQP_URL))
        channel = connection.channel()
        channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        results = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(results, RESULTS_EXCHANGE, routing_key="*.asset.*")
        publisher = PortalPublisher(services.AMQP_URL)
        portal = f"bench-{uuid.uuid4().hex[:8]}"
        # warm-up: one upload, so worker start-up is not counted
        publisher.publish(_upload(portal, "warm", files[0]))
        _wait_hashed(channel, results, portal, 1, 120)
        start = time.perf_counter()
        cpu_before = _cpu_seconds(server.pid), _cpu_seconds(worker.pid)
        for i in range(n):
            publisher.publish(_upload(portal, f"a{i}", files[i % len(files)]))
        _wait_hashed(channel, results, portal, n, 600)
        elapsed = time.perf_counter() - start
        cpu_after = _cpu_seconds(server.pid), _cpu_seconds(worker.pid)
        publisher.close()
        connection.close()
    return Run(
        label,
        n / elapsed,
        elapsed,
        cpu_after[0] - cpu_before[0],
        cpu_after[1] - cpu_before[1],
    )


def _upload(portal: str, asset_id: str, path: Path) -> AssetUploaded:
    return AssetUploaded(
        portal_id=portal, asset_id=asset_id, source=str(path), uploaded_at=datetime.now(UTC)
    )


def _wait_hashed(channel: object, queue: str, portal: str, count: int, seconds: float) -> None:
    seen = 0
    deadline = time.monotonic() + seconds
    for method, _props, body in channel.consume(queue, inactivity_timeout=1):  # type: ignore[attr-defined]
        if method is not None:
            channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
            event = json.loads(body)
            if event.get("portal_id") == portal:
                if method.routing_key != f"{portal}.asset.hashed":
                    raise RuntimeError(f"upload failed: {event}")
                seen += 1
        if seen >= count:
            channel.cancel()  # type: ignore[attr-defined]
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {count} uploads hashed in {seconds} s")
