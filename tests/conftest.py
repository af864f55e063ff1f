"""Shared fixtures: a real MongoDB-protocol server, real RabbitMQ, and a worker between them.

MongoDB: `DUPFINDER_MONGODB_URL` when set (a real mongod), otherwise SecantusDB, a
MongoDB-compatible server started in-process on a free port. RabbitMQ: `DUPFINDER_AMQP_URL` or
the local default; tests fail (never skip) when it is not reachable.
"""

from __future__ import annotations

import os

# Actor retry options are read when the actors are imported: keep test retries fast and few.
os.environ.setdefault("DUPFINDER_MIN_BACKOFF_MS", "100")
os.environ.setdefault("DUPFINDER_MAX_BACKOFF_MS", "400")
os.environ.setdefault("DUPFINDER_MAX_RETRIES", "3")
os.environ.setdefault("DUPFINDER_MONGODB_TIMEOUT_MS", "2000")
os.environ.setdefault("DUPFINDER_FETCH_TIMEOUT_S", "3")
os.environ.setdefault("DUPFINDER_FETCH_CONNECT_TIMEOUT_S", "2")
# Small pages, so paging is exercised with a few dozen sets (the shipped size is 500).
os.environ.setdefault("DUPFINDER_PAGE_SIZE", "20")
# Health endpoints on any free port; a short liveness timeout so that a stuck message shows.
os.environ.setdefault("DUPFINDER_HTTP_PORT", "0")
os.environ.setdefault("DUPFINDER_LIVENESS_TIMEOUT_S", "2")
# ./dev test enables RabbitMQ's management plugin on the local node for `dupfinder status`.
os.environ.setdefault("DUPFINDER_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Harness, SecantusServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="fault tests at ten times the size")


@pytest.fixture(scope="session")
def secantus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer | None]:
    """The in-process server, or None when the tests use an external MongoDB."""
    if os.environ.get("DUPFINDER_MONGODB_URL"):
        yield None
        return
    server = SecantusServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_url(secantus: SecantusServer | None) -> str:
    """URL of the MongoDB-protocol server the tests use."""
    return os.environ.get("DUPFINDER_MONGODB_URL") or secantus.url  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def harness(mongo_url: str) -> Iterator[Harness]:
    """A running in-process worker on real RabbitMQ and MongoDB, shared by the session."""
    with Harness.start(mongo_url, database=f"dupfinder_test_{uuid.uuid4().hex[:8]}") as h:
        yield h


@pytest.fixture
def portal() -> str:
    """A fresh tenant per test, so tests never see each other's assets."""
    return f"portal-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder for the test's image files."""
    folder = tmp_path / "images"
    folder.mkdir()
    return folder
