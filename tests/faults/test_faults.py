"""Fault injection with a ledger: uploads keep flowing while workers, the broker and the
database fail; afterwards five invariants are checked (see ledger.check).

Each scenario runs against a RabbitMQ node and a database server of this module's own. CI runs
the default size; `pytest tests/faults --long` runs ten times as many uploads.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pymongo.database
import pytest

from tests.commands import clashing_commands
from tests.faults.cluster import DatabaseServer, RabbitNode, WorkerProcess, printer, worker_env
from tests.faults.ledger import Ledger, ResultWatcher, check, ledger_images

PORTALS = 5


@dataclass
class Rig:
    """The suite's own services, its images (path, expected pHash) and its sizes."""

    node: RabbitNode
    db_server: DatabaseServer
    worker: WorkerProcess
    db: pymongo.database.Database[dict[str, Any]]
    images: list[tuple[Path, str]]
    uploads: int
    long: bool
    show: Callable[[str], None]


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    pytestconfig: pytest.Config,
) -> Iterator[Rig]:
    folder = tmp_path_factory.mktemp("faults")
    node = RabbitNode()
    db_server = DatabaseServer(folder / "db")
    node.start()
    db_server.start()
    images = ledger_images(folder, 500)
    env = worker_env(
        node.url,
        db_server.url,
        "faults",
        DUPFINDER_MIN_BACKOFF_MS="200",
        DUPFINDER_MAX_BACKOFF_MS="3000",
    )
    worker = WorkerProcess(env, folder / "worker.log")
    worker.start()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(db_server.url)
    long = bool(request.config.getoption("--long"))
    show = printer(pytestconfig)

    try:
        yield Rig(
            node, db_server, worker, client["faults"], images, 3000 if long else 300, long, show
        )
    finally:
        client.close()
        if worker.alive():
            worker.kill9()
        db_server.stop()
        node.stop()


def ensure_worker(rig: Rig) -> None:
    """Start the worker if needed and fail at once, with its log, when it does not stay up."""
    if not rig.worker.alive():
        rig.worker.start()
    time.sleep(1.5)
    if not rig.worker.alive():
        pytest.fail("the worker did not start:\n" + rig.worker.log_tail())


def run(
    rig: Rig, name: str, fault_at: dict[int, Callable[[], None]], bound_s: float
) -> ResultWatcher:
    """Publish the uploads over five portals, injecting faults at given positions, then check."""
    ensure_worker(rig)
    memory_before = rig.worker.rss_mib()
    watcher = ResultWatcher(rig.node.url)
    ledger = Ledger(rig.node.url)
    rng = random.Random(name)
    try:
        for n in range(rig.uploads):
            if n in fault_at:
                fault_at[n]()
            path, phash = rig.images[rng.randrange(len(rig.images))]
            ledger.publish(f"{name}-{n % PORTALS}", f"a{n}", path, phash)
    finally:
        ledger.close()
    verdicts = check(
        ledger,
        rig.db,
        drained_within_s=bound_s,
        workers_alive=rig.worker.alive,
        memory_mib=rig.worker.rss_mib,
        memory_before_mib=memory_before,
    )
    time.sleep(0.5)
    watcher.stop()
    rig.show(
        "\n"
        + verdicts.report(f"{name}: {len(ledger.entries)} confirmed uploads")
        + f"\n  {watcher.events} asset.hashed events seen for {len(watcher.first_hashed)} assets"
        + (
            f" (the watcher lost its connection {watcher.reconnects} times)"
            if watcher.reconnects
            else ""
        )
    )
    assert verdicts.ok, verdicts.report(name)
    return watcher


def test_kill_9_of_the_worker_during_load(rig: Rig) -> None:
    def crash_and_restart() -> None:
        time.sleep(random.uniform(0.2, 0.8))  # land mid-hash, mid-write or mid-publish
        rig.worker.kill9()
        rig.worker.start()

    kills = 20 if rig.long else 5
    step = rig.uploads // (kills + 1)
    run(rig, "kill9", {step * k: crash_and_restart for k in range(1, kills + 1)}, bound_s=300)


def test_sigterm_lets_in_flight_work_finish(rig: Rig) -> None:
    codes = []

    def stop_and_start() -> None:
        codes.append(rig.worker.terminate())
        rig.worker.start()

    watcher = run(rig, "sigterm", {rig.uploads // 2: stop_and_start}, bound_s=120)
    assert codes == [0]
    # In-flight work finished before the exit, so nothing had to be done twice
    assert watcher.events == len(watcher.first_hashed) == rig.uploads


def test_broker_restart_and_dropped_connections(rig: Rig) -> None:
    run(
        rig,
        "broker",
        {
            rig.uploads // 4: rig.node.close_all_connections,
            rig.uploads // 2: rig.node.restart_app,
            3 * rig.uploads // 4: rig.node.close_all_connections,
        },
        bound_s=180,
    )


def test_database_outage_during_load(rig: Rig) -> None:
    def outage() -> None:
        rig.db_server.stop()
        time.sleep(60 if rig.long else 5)
        rig.db_server.start()

    run(rig, "database", {rig.uploads // 3: outage}, bound_s=300)


def test_retry_storm_a_flood_while_the_database_is_down(rig: Rig) -> None:
    import threading

    def outage() -> None:
        rig.db_server.stop()
        time.sleep(120 if rig.long else 15)
        rig.db_server.start()

    def background() -> None:
        threading.Thread(target=outage, daemon=True).start()

    run(rig, "storm", {10: background}, bound_s=400)


def test_memory_alarm_blocks_for_a_while_and_nothing_hangs(rig: Rig) -> None:
    def alarm() -> None:
        # RabbitMQ blocks every publisher while the alarm lasts (workers' result publishes too)
        rig.node.ctl("set_vm_memory_high_watermark", "0.0000001")
        time.sleep(8)
        rig.node.ctl("set_vm_memory_high_watermark", "0.4")

    # Ten publishes queued behind the alarm: run it in a thread while the load continues
    import threading

    def background() -> None:
        threading.Thread(target=alarm, daemon=True).start()

    run(rig, "alarm", {rig.uploads // 3: background}, bound_s=180)


def test_flood_with_duplicate_deliveries(rig: Rig) -> None:
    """Ten times the uploads over five portals, one in ten delivered twice; latency figures."""
    ensure_worker(rig)
    count = 10_000 if rig.long else 900
    watcher = ResultWatcher(rig.node.url)
    ledger = Ledger(rig.node.url)
    memory_before = rig.worker.rss_mib()
    rng = random.Random("flood")
    start = time.monotonic()
    try:
        for n in range(count):
            path, phash = rig.images[rng.randrange(len(rig.images))]
            ledger.publish(f"flood-{n % PORTALS}", f"f{n}", path, phash, twice=n % 10 == 0)
    finally:
        ledger.close()
    verdicts = check(
        ledger,
        rig.db,
        drained_within_s=300,
        workers_alive=rig.worker.alive,
        memory_mib=rig.worker.rss_mib,
        memory_before_mib=memory_before,
    )
    deadline = time.monotonic() + 30
    while len(watcher.first_hashed) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    watcher.stop()
    latencies = sorted(
        watcher.first_hashed[key] - sent
        for key, sent in ledger.published_at.items()
        if key in watcher.first_hashed
    )
    elapsed = max(watcher.first_hashed.values()) - start
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    rig.show(
        "\n"
        + verdicts.report(f"flood: {count} confirmed uploads, {count // 10} twice")
        + f"\n  figures: {count / elapsed:.0f} uploads/s end to end, publish-to-hashed p50 "
        f"{p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; {watcher.events} asset.hashed "
        f"events for {len(watcher.first_hashed)} assets"
    )
    assert verdicts.ok, verdicts.report("flood")
    assert len(watcher.first_hashed) == count


def test_conflicting_commands_across_two_worker_processes(rig: Rig, tmp_path: Path) -> None:
    """Hundreds of make-original(A), make-original(B), delete(A), delete(B) on one set, served by
    two worker processes at once, then all of them replayed."""
    from tests.faults.ledger import CommandWatcher

    ensure_worker(rig)
    second = WorkerProcess(rig.worker.env, tmp_path / "second.log")
    second.start()
    portal = "conflict"
    ledger = Ledger(rig.node.url)
    path, phash = rig.images[0]
    for asset in ("A", "B", "C"):
        ledger.publish(portal, asset, path, phash)
    deadline = time.monotonic() + 60
    while rig.db.assets.count_documents({"portal_id": portal, "state": "hashed"}) < 3:
        assert time.monotonic() < deadline, "the set was not hashed"
        time.sleep(0.2)
    watcher = CommandWatcher(rig.node.url)
    commands = clashing_commands(portal, "A", "B", "C", rounds=100 if not rig.long else 1000)
    try:
        for command in commands:
            ledger.send(command)
        first = watcher.wait(len(commands), timeout_s=300)
        state = sorted(
            rig.db.assets.find({"portal_id": portal}, {"_id": 0, "updated_at": 0}),
            key=lambda d: d["asset_id"],
        )
        for command in commands:  # replay every command: same ids, new messages
            ledger.send(command)
        replayed = watcher.wait(2 * len(commands), timeout_s=300)
    finally:
        ledger.close()
        watcher.stop()
        second.kill9()

    live = [d for d in state if d["state"] == "hashed"]
    pinned = [d for d in state if d.get("pinned_at")]
    latest = max(pinned, key=lambda d: d["pinned_at"]) if pinned else None
    outcomes = {e["command_id"]: e for e in first}
    violations = [
        e for e in first if e["_type"] == "duplicates.deleted" and e["original_id"] in e["deleted"]
    ]
    after = sorted(
        rig.db.assets.find({"portal_id": portal}, {"_id": 0, "updated_at": 0}),
        key=lambda d: d["asset_id"],
    )
    rig.show(
        f"\n== conflicting commands: {len(commands)} commands on one set, two worker processes"
        f"\n  live at the end: {[d['asset_id'] for d in live]}, latest pin: "
        f"{latest['asset_id'] if latest else None}"
        f"\n  outcomes: {dict(Counter(e['_type'] for e in first))}; replays re-published "
        f"{len(replayed) - len(first)}"
    )
    assert len(outcomes) == len(commands), "every command answered once"
    assert live, "the set lost every member"
    assert latest is None or latest["state"] == "hashed", "the latest original was deleted"
    assert not violations, "a command deleted its own original"
    assert after == state, "a replayed command changed something"
    assert all(
        outcomes[e["command_id"]] == {k: v for k, v in e.items()} for e in replayed[len(first) :]
    ), "a replay answered differently"


def test_result_publisher_sends_every_waiting_event_before_awaiting_a_confirm(rig: Rig) -> None:
    """The events queued for the publishing thread go out together: under a memory alarm, which
    holds every confirm back, all of them are handed to the channel, not only the first."""
    import asyncio
    import threading
    import uuid

    import pika

    from schemas.contract import RESULTS_EXCHANGE
    from worker.results import ResultPublisher

    portal = f"pipelining{uuid.uuid4().hex[:6]}"
    admin = pika.BlockingConnection(pika.URLParameters(rig.node.url))
    channel = admin.channel()
    channel.exchange_declare(RESULTS_EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(portal, durable=True)
    channel.queue_bind(portal, RESULTS_EXCHANGE, routing_key=f"{portal}.#")
    publisher = ResultPublisher(rig.node.url)
    publisher.declare()
    impl = publisher._channel._impl  # type: ignore[union-attr]  # what pika sends through
    handed: list[str] = []
    send = impl.basic_publish

    def counted(**kwargs: Any) -> None:
        handed.append(kwargs["routing_key"])
        send(**kwargs)

    impl.basic_publish = counted
    gate = threading.Event()
    publisher._thread.submit(gate.wait)  # the publishing thread busy while the five queue up
    outcomes: list[BaseException | None] = []

    def publish(n: int) -> None:
        try:
            asyncio.run(publisher.publish_raw(f"{portal}.asset.hashed", b'{"n": %d}' % n))
            outcomes.append(None)
        except BaseException as e:  # reported by the assertion below
            outcomes.append(e)

    rig.node.ctl("set_vm_memory_high_watermark", "0.0000001")
    try:
        callers = [threading.Thread(target=publish, args=(n,)) for n in range(5)]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 10
        while publisher._thread._calls.qsize() < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # each caller has handed its event to the thread
        gate.set()
        while len(handed) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Given no confirm can come while the alarm lasts, every one of the five was sent anyway
        assert len(handed) == 5, f"{len(handed)} of 5 events sent before the first confirm"
        assert outcomes == [], "a publish returned while RabbitMQ confirmed nothing"
    finally:
        rig.node.ctl("set_vm_memory_high_watermark", "0.4")
    for caller in callers:
        caller.join(60)
    try:
        assert outcomes == [None] * 5, outcomes
        assert channel.queue_declare(portal, passive=True).method.message_count == 5
    finally:
        channel.queue_delete(portal)
        admin.close()
        publisher.close()
