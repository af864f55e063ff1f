"""Uploads end to end: publish N `asset-uploaded`, wait for N `asset.hashed`.

    python -m benchmarks.e2e [--n 200] [--megapixels 12] [--rounds 2]

Starts its own SecantusDB server (a MongoDB-protocol server, as a separate process) and a
`dupfinder worker` process, on the local RabbitMQ; the queues are purged first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
    broker_cpu: float
    script_cpu: float
    """This process's: publishing the uploads and reading their outcomes, as the portal would."""
    pure: float = 0.0
    """Pure hashing's images per second around this run (`end_to_end`)."""


#: The configurations compared, the first the baseline: how uploads were written before (each
#: first upload looked up, marked pending at once, then updated with its result; every read and
#: write its own request: `DUPFINDER_WRITE_BATCH=1` sends look-ups alone too), then the same
#: with reads and writes batched, then a first upload one insert, batched within the 50 ms
#: window of before, then the default (the same, batches gathered for up to 200 ms).
CONFIGURATIONS = [
    (
        "pending at once, each read/write alone",
        {"DUPFINDER_PENDING_AFTER_S": "0", "DUPFINDER_WRITE_BATCH": "1"},
    ),
    ("pending at once, batched", {"DUPFINDER_PENDING_AFTER_S": "0"}),
    ("one insert an upload, 50 ms window", {"DUPFINDER_WRITE_WINDOW_MS": "50"}),
    ("one insert an upload, batched (default)", {}),
]


def end_to_end(n: int, files: list[Path], rounds: int = 1) -> float:
    """Print and return the default's uploads per second through the whole service as a share
    of pure hashing, beside the earlier ways of writing an upload, each configuration run
    `rounds` times in turn.

    Pure hashing (the same files on as many processes as cores, nothing else running) is
    measured before the first run and after every run, and each run is held to the mean of the
    two measured around it: this machine's speed drifts by 10-20 % within minutes, so one pure
    figure taken at the start made the later runs' shares wander with it.
    """
    cores = os.cpu_count() or 1
    paths = [str(f) for f in files]
    pures = [_pure_rate(paths, cores)]
    runs: dict[str, list[Run]] = {label: [] for label, _ in CONFIGURATIONS}
    for _ in range(rounds):
        for label, env in CONFIGURATIONS:
            run = _run(n, files, label, env)
            pures.append(_pure_rate(paths, cores))
            run.pure = (pures[-2] + pures[-1]) / 2
            runs[label].append(run)
    print(
        f"\n== end to end: {n} uploads of {files[0].parent.name} through RabbitMQ and "
        f"SecantusDB, {cores} worker processes on {cores} cores, {rounds} round(s); pure hashing "
        f"on the same files and cores between the runs: {min(pures):.1f}-{max(pures):.1f} "
        "images/s (each run against the mean of those before and after it)"
    )
    print(
        f"{'':<40} {'uploads/s':>9} {'pure':>6} {'of pure':>8} {'DB CPU/upload':>14} "
        f"{'worker CPU/upload':>18} {'RabbitMQ CPU/upload':>20} {'script':>7} {'idle':>6}"
    )
    for label, _ in CONFIGURATIONS:
        for run in runs[label]:
            used = run.server_cpu + run.worker_cpu + run.broker_cpu + run.script_cpu
            idle = cores * run.elapsed - used
            print(
                f"{run.label:<40} {run.rate:>9.1f} {run.pure:>6.1f} {run.rate / run.pure:>8.0%} "
                f"{run.server_cpu / n * 1000:>11.1f} ms {run.worker_cpu / n * 1000:>15.1f} ms "
                f"{run.broker_cpu / n * 1000:>17.1f} ms {run.script_cpu:>6.2f}s {idle:>5.2f}s"
            )
    base = runs[CONFIGURATIONS[0][0]]
    best = runs[CONFIGURATIONS[-1][0]]
    base_db = statistics.median(r.server_cpu for r in base)
    best_db = statistics.median(r.server_cpu for r in best)
    share = statistics.median(r.rate / r.pure for r in best)
    base_share = statistics.median(r.rate / r.pure for r in base)
    print(
        f"default against the first line (medians): {share / base_share:.2f}x "
        f"the uploads/s, {share:.0%} of pure hashing; the database's CPU an upload "
        f"{base_db / max(best_db, 1e-9):.2f}x less ('script': this process's CPU, publishing "
        "and reading outcomes as the portal would; 'idle': core time no process used, and other "
        "processes')"
    )
    return share


def _pure_rate(paths: list[str], cores: int) -> float:
    """Images per second hashing `paths` on `cores` processes, about 200 images' worth."""
    from benchmarks.hashing import pool_rate

    return pool_rate(paths, cores, max(1, 200 // len(paths)))


def _run(n: int, files: list[Path], label: str, env: dict[str, str]) -> Run:
    with (
        services.database() as (url, server),
        services.worker(url, processes=os.cpu_count() or 1, env=env) as worker,
    ):
        connection = pika.BlockingConnection(pika.URLParameters(services.AMQP_URL))
        channel = connection.channel()
        channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
        portal = f"bench-{uuid.uuid4().hex[:8]}"
        # Durable, as the README's integration declares a portal's: RabbitMQ then writes every
        # outcome to disk before confirming it, which an exclusive queue spared it (4-10 % of
        # the rate, measured on 2026-12-04). Deleted below; a run that fails leaves it to expire.
        results = f"{portal}.answers"
        channel.queue_declare(results, durable=True, arguments={"x-expires": 600_000})
        channel.queue_bind(results, RESULTS_EXCHANGE, routing_key="*.asset.*")
        publisher = PortalPublisher(services.AMQP_URL)
        # warm-up: one upload, so worker start-up is not counted
        publisher.publish(_upload(portal, "warm", files[0]))
        _wait_hashed(channel, results, portal, 1, 120)
        start = time.perf_counter()
        cpu_before = _cpu_seconds(server.pid), _cpu_seconds(worker.pid), _broker_cpu()
        script_before = _own_cpu()
        for i in range(n):
            publisher.publish(_upload(portal, f"a{i}", files[i % len(files)]))
        _wait_hashed(channel, results, portal, n, 600)
        elapsed = time.perf_counter() - start
        cpu_after = _cpu_seconds(server.pid), _cpu_seconds(worker.pid), _broker_cpu()
        script_cpu = _own_cpu() - script_before
        channel.queue_delete(results)
        publisher.close()
        connection.close()
    return Run(
        label,
        n / elapsed,
        elapsed,
        cpu_after[0] - cpu_before[0],
        cpu_after[1] - cpu_before[1],
        cpu_after[2] - cpu_before[2],
        script_cpu,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _broker_cpu() -> float:
    """CPU time of the local RabbitMQ node(s) so far: every `beam.smp` process's (0 if none is
    visible, e.g. a broker on another host)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "beam.smp":
                total += _cpu_seconds(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="uploads a run")
    parser.add_argument("--megapixels", type=int, default=12, choices=(1, 4, 12))
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration")
    args = parser.parse_args()
    from benchmarks.corpus import camera_files

    end_to_end(args.n, camera_files(args.megapixels, "JPEG"), args.rounds)


if __name__ == "__main__":
    main()
