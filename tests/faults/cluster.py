"""Services of their own for fault tests: a RabbitMQ node, a database server, worker processes.

Stopping, filling or cutting these never disturbs the services the other tests share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float, *, open_: bool = True) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if (s.connect_ex(("127.0.0.1", port)) == 0) == open_:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} did not {'open' if open_ else 'close'} in {seconds} s")


class RabbitNode:
    """A RabbitMQ node with its own name, port and data folder (and, for a cluster, an Erlang
    cookie its peers share and no other node knows)."""

    def __init__(self, *, prefix: str = "dupfaults", cookie: str | None = None) -> None:
        # RabbitMQ runs as its own user, which cannot enter pytest's private temporary folders.
        self.folder = Path(tempfile.mkdtemp(prefix="dupfinder-rabbit-"))
        self.folder.chmod(0o755)
        self.port = free_port()
        self.name = f"{prefix}{uuid.uuid4().hex[:6]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.cookie = cookie
        self._env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
        }
        if cookie is not None:
            self._env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = f"-setcookie {cookie}"

    def start(self) -> None:
        """Start the node; after `kill9`, again on the same name, port and data."""
        for sub in ("mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").write_text("[].")
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        shutil.chown(self.folder, "rabbitmq", "rabbitmq")
        for path in self.folder.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        (self.folder / "pid").unlink(missing_ok=True)
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env, check=True, timeout=60)
        wait_port(self.port, 60)

    def ctl(self, *args: str) -> str:
        cookie = ["--erlang-cookie", self.cookie] if self.cookie else []
        done = subprocess.run(
            ["rabbitmqctl", *cookie, "-n", self.name, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout

    def join(self, first: RabbitNode) -> None:
        """Join the cluster of `first` (this node's own data is reset)."""
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", first.name)
        self.ctl("start_app")
        wait_port(self.port, 60)

    def kill9(self) -> None:
        """SIGKILL to the node's Erlang VM: no goodbye to its peers or its clients."""
        pid = int((self.folder / "pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_port(self.port, 30, open_=False)

    def restart_app(self) -> None:
        """`stop_app` then `start_app`: every connection drops, queues survive."""
        self.ctl("stop_app")
        self.ctl("start_app")
        wait_port(self.port, 60)

    def close_all_connections(self) -> None:
        self.ctl("close_all_connections", "fault injection")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):  # already gone
            self.ctl("stop")
        shutil.rmtree(self.folder, ignore_errors=True)


class DatabaseServer:
    """SecantusDB as a process of its own, restartable on the same port and data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        server = Path(sys.executable).parent / "secantusd-py"
        self._process = subprocess.Popen(
            [
                str(server),
                "--port",
                str(self.port),
                "--storage-path",
                str(self.folder),
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 30)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(30)
            self._process = None
            wait_port(self.port, 10, open_=False)


class WorkerProcess:
    """`dupfinder worker` as its own process group, killable like a real deployment's."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker.cli",
                    "worker",
                    "--processes",
                    "1",
                    "--threads",
                    "4",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill9(self) -> None:
        """SIGKILL to the whole group: the supervisor and its worker process die at once."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM, as a deployment stops a worker; returns its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self.process = None
        return code

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mib(self) -> float:
        """Resident memory of every process of the worker (its process group)."""
        if self.process is None:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid:  # field 5 of stat: the process group
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss pages
        return total / 2**20


def worker_env(amqp_url: str, mongo_url: str, database: str, **more: str) -> dict[str, str]:
    """A worker's environment for a suite of services of its own: plain-text logs, no metrics
    port or management API to share, retries that outlast the faults a suite injects."""
    return {
        **os.environ,
        "DUPFINDER_AMQP_URL": amqp_url,
        "DUPFINDER_MONGODB_URL": mongo_url,
        "DUPFINDER_MONGODB_DATABASE": database,
        "DUPFINDER_MANAGEMENT_URL": "",
        "DUPFINDER_HTTP_PORT": "0",
        "DUPFINDER_LOG_FORMAT": "text",
        "DUPFINDER_MAX_RETRIES": "50",
        "DUPFINDER_MONGODB_TIMEOUT_MS": "2000",
        **more,
    }


def printer(pytestconfig: Any) -> Callable[[str], None]:
    """Print past pytest's capture: a suite's ledger counts, verdicts and figures belong in
    CI's log."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def show(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(text, flush=True)

    return show
