"""Losing a RabbitMQ node: a three-node cluster of this suite's own, quorum queues, and the node
that leads `dupfinder.assets` killed with SIGKILL in the middle of a run, then restarted.

The worker and the portal are given all three nodes' URLs. Afterwards the fault suite's ledger
invariants must hold (every confirmed upload hashed, one effect each, nothing lost or left in
`.DQ`/`.XQ`, the worker alive and drained within a bound), and the figures the README's
"Scaling out" section quotes are printed: how long hashing stalled, how many uploads were
delayed, how long the backlog took to drain. `pytest tests/cluster --long` runs ten times as
many uploads.
"""

from __future__ import annotations

import gc
import itertools
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pymongo.database
import pytest

from schemas.contract import ASSETS_QUEUE
from tests.faults.cluster import DatabaseServer, RabbitNode, WorkerProcess, printer, worker_env
from tests.faults.ledger import Ledger, check, ledger_images

PORTALS = 3
#: An upload hashed this much later than it was published counts as delayed by the fault.
DELAYED_S = 2.0
#: Uploads a second, well below what the worker hashes: latency then shows the fault alone.
RATE = 25


@dataclass
class Cluster:
    nodes: list[RabbitNode]
    db_server: DatabaseServer
    worker: WorkerProcess
    db: pymongo.database.Database[dict[str, Any]]
    images: list[tuple[Path, str]]
    uploads: int
    show: Callable[[str], None]

    @property
    def url(self) -> str:
        """Every node, as a portal and the worker are configured."""
        return ",".join(node.url for node in self.nodes)

    def leader(self, queue: str, asking: RabbitNode) -> str:
        rows = json.loads(asking.ctl("list_queues", "name", "leader", "--formatter", "json"))
        return str(next(row["leader"] for row in rows if row["name"] == queue))

    def running(self, asking: RabbitNode) -> list[str]:
        status = json.loads(asking.ctl("cluster_status", "--formatter", "json"))
        return sorted(status["running_nodes"])


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    pytestconfig: pytest.Config,
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("cluster")
    cookie = uuid.uuid4().hex  # these three nodes' own: no other node can join or be asked
    nodes = [RabbitNode(prefix="dupcluster", cookie=cookie) for _ in range(3)]
    db_server = DatabaseServer(folder / "db")
    try:
        for node in nodes:
            node.start()
        for node in nodes[1:]:
            node.join(nodes[0])
        db_server.start()
        images = ledger_images(folder, 700)
        env = worker_env(
            ",".join(node.url for node in nodes),
            db_server.url,
            "cluster",
            DUPFINDER_QUEUE_TYPE="quorum",
            DUPFINDER_MIN_BACKOFF_MS="250",
            DUPFINDER_MAX_BACKOFF_MS="4000",
        )
        worker = WorkerProcess(env, folder / "worker.log")
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(db_server.url)
        show = printer(pytestconfig)
        uploads = 3000 if request.config.getoption("--long") else 300
        yield Cluster(nodes, db_server, worker, client["cluster"], images, uploads, show)
        client.close()
        if worker.alive():
            worker.kill9()
        # A connection whose node was killed under it cannot always be closed cleanly, and its
        # socket is left to the garbage collector: collect it here, in the suite that killed
        # the node, rather than as a warning in whichever test runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    finally:
        db_server.stop()
        for node in nodes:
            node.stop()


class Progress:
    """When each asset was first seen hashed in the database (sampled every 0.2 s)."""

    def __init__(self, db: pymongo.database.Database[dict[str, Any]]) -> None:
        self.first_hashed: dict[tuple[str, str], float] = {}
        self._db = db
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                for doc in self._db.assets.find(
                    {"state": "hashed"}, {"_id": 0, "portal_id": 1, "asset_id": 1}
                ):
                    self.first_hashed.setdefault((doc["portal_id"], doc["asset_id"]), now)
            except pymongo.errors.PyMongoError:
                pass  # the next sample tells
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def longest_stall_after(self, moment: float) -> float:
        """The longest time after `moment` in which no asset was newly hashed."""
        times = sorted(t for t in self.first_hashed.values() if t >= moment)
        marks = [moment, *times]
        return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)


@pytest.mark.timeout(600)
def test_killing_the_node_that_leads_the_assets_queue_loses_nothing(cluster: Cluster) -> None:
    cluster.worker.start()
    deadline = time.monotonic() + 60
    while ASSETS_QUEUE not in cluster.nodes[0].ctl("list_queues", "name"):
        assert cluster.worker.alive(), cluster.worker.log_tail()
        assert time.monotonic() < deadline, "the worker did not declare its queues"
        time.sleep(0.5)
    time.sleep(2)  # the worker process is consuming
    assert cluster.worker.alive(), cluster.worker.log_tail()

    leader_name = cluster.leader(ASSETS_QUEUE, cluster.nodes[0])
    victim = next(node for node in cluster.nodes if node.name == leader_name)
    survivor = next(node for node in cluster.nodes if node is not victim)
    ledger = Ledger(cluster.url, queue_type="quorum")
    progress = Progress(cluster.db)
    memory_before = cluster.worker.rss_mib()
    killed_at = restarted_at = 0.0
    new_leader = ""
    restarting: threading.Thread | None = None

    def restart() -> None:
        nonlocal restarted_at, new_leader
        new_leader = cluster.leader(ASSETS_QUEUE, survivor)
        victim.start()
        restarted_at = time.monotonic()

    started = time.monotonic()
    try:
        for n in range(cluster.uploads):
            time.sleep(max(0.0, started + n / RATE - time.monotonic()))
            if n == cluster.uploads // 3:
                victim.kill9()
                killed_at = time.monotonic()
            if n == 2 * cluster.uploads // 3:  # in the background: the uploads go on
                restarting = threading.Thread(target=restart, daemon=True)
                restarting.start()
            path, phash = cluster.images[n % len(cluster.images)]
            ledger.publish(f"cluster-{n % PORTALS}", f"a{n}", path, phash)
    finally:
        ledger.close()
        if restarting is not None:
            restarting.join(120)
    published_s = time.monotonic() - started
    verdicts = check(
        ledger,
        cluster.db,
        drained_within_s=180,
        workers_alive=cluster.worker.alive,
        memory_mib=cluster.worker.rss_mib,
        memory_before_mib=memory_before,
    )
    drained_s = time.monotonic() - started
    time.sleep(0.5)
    progress.stop()

    latencies = sorted(
        progress.first_hashed[key] - sent
        for key, sent in ledger.published_at.items()
        if key in progress.first_hashed
    )
    delayed = sum(1 for latency in latencies if latency > DELAYED_S)
    stall = progress.longest_stall_after(killed_at)
    rejoined = cluster.running(survivor)
    cluster.show(
        "\n"
        + verdicts.report(f"cluster: {len(ledger.entries)} confirmed uploads, leader killed")
        + f"\n  figures: {victim.name} (leader of {ASSETS_QUEUE}) killed with SIGKILL after "
        f"{cluster.uploads // 3} uploads ({RATE}/s), back {restarted_at - killed_at:.1f} s "
        "later; "
        f"new leader {new_leader}; longest stall in hashing after the kill "
        f"{stall:.1f} s; {delayed} uploads hashed more than {DELAYED_S:.0f} s after their "
        f"publish (max {latencies[-1]:.1f} s, median {latencies[len(latencies) // 2]:.2f} s); "
        f"{ledger.republished} publishes repeated after an unconfirmed attempt; all published "
        f"in {published_s:.1f} s, drained {drained_s:.1f} s after the first; "
        f"worker restarts: {cluster.worker.starts - 1}; running nodes after: {len(rejoined)}"
    )
    assert verdicts.ok, verdicts.report("cluster") + "\n" + cluster.worker.log_tail(60)
    assert new_leader and new_leader != victim.name  # the queue moved to a surviving node
    assert victim.name in rejoined and len(rejoined) == 3
    assert cluster.worker.starts == 1  # it moved nodes by itself, nobody restarted it
    assert len(latencies) == cluster.uploads
