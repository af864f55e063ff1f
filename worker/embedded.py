"""An embedded MongoDB-protocol server for trying dupfinder out without installing MongoDB.

`dupfinder worker --embedded` starts SecantusDB (a MongoDB wire-protocol server on WiredTiger,
the one the tests use) as a child process on a free loopback port, with its data in a folder
that outlives the worker, and stops it when the worker stops. It is for a first hour and for
demos, not for production: one process, no replication, no authentication, and slower than
`mongod` by large factors (see the README's performance section).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: How long the server may take to listen; a first start creates its storage.
START_DEADLINE_S = 60.0
#: How long it may take to stop after SIGTERM before it is killed.
STOP_DEADLINE_S = 30.0

WARNING = (
    "EMBEDDED DATABASE, FOR TRYING DUPFINDER OUT ONLY: SecantusDB serves MongoDB on {url} "
    "with its data in {folder}. It has no authentication or replication and is far slower than "
    "mongod; set DUPFINDER_MONGODB_URL to a real MongoDB for anything else."
)


class EmbeddedUnavailable(RuntimeError):
    """The embedded server cannot be started here (not installed, or it did not listen)."""


def server_command() -> list[str]:
    """How to run SecantusDB's server: its script beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "secantusd-py"
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if found is None:
        raise EmbeddedUnavailable(
            "the embedded database needs the secantusdb package (pip install secantusdb; "
            "./dev worker installs it)"
        )
    return [found]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def embedded_database(folder: Path) -> Iterator[str]:
    """Run SecantusDB with its data in `folder` while the block runs; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (folder / "secantusdb.log").open("ab")
    process = subprocess.Popen(
        [
            *server_command(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(folder / "data"),
            "--log-level",
            "WARNING",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _listening(port):
            if process.poll() is not None:
                raise EmbeddedUnavailable(
                    f"the embedded database exited with status {process.returncode}; "
                    f"see {folder / 'secantusdb.log'}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedUnavailable(
                    f"the embedded database did not listen within {START_DEADLINE_S:.0f} s"
                )
            time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
