"""Configuration: environment variables with the DUPFINDER_ prefix, validated up front."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.config import Settings


def test_defaults_match_the_readme(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("DUPFINDER_")]:
        monkeypatch.delenv(name)
    settings = Settings()
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.mongodb_url == "mongodb://127.0.0.1:27017/"
    assert settings.mongodb_database == "dupfinder"
    assert (settings.max_distance, settings.max_pixels, settings.page_size) == (0, 150_000_000, 500)
    assert (settings.max_retries, settings.max_backoff_ms) == (10, 300_000)


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUPFINDER_MAX_DISTANCE", "6")
    monkeypatch.setenv("DUPFINDER_MONGODB_DATABASE", "assets")
    settings = Settings()
    assert (settings.max_distance, settings.mongodb_database) == (6, "assets")


def test_the_shipped_default_radius_is_exact_match(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUPFINDER_MAX_DISTANCE", raising=False)
    assert Settings().max_distance == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_DISTANCE", "33"),
        ("MAX_BACKOFF_MS", str(20 * 60 * 1000)),
        ("TIME_LIMIT_MS", str(30 * 60 * 1000)),
        ("PAGE_SIZE", "501"),
        ("HASH_THREADS", "0"),
        ("QUEUE_TYPE", "mirrored"),
        ("DELIVERY_LIMIT", "1"),
        ("AMQP_URL", "amqp://a:5672/,rabbit-b:5672"),
        ("MONGODB_WRITE_CONCERN", "0"),
    ],
)
def test_nonsense_fails_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"DUPFINDER_{name}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_amqp_url_gets_heartbeat_and_blocked_timeout_unless_given() -> None:
    settings = Settings(amqp_url="amqp://u:p@rabbit:5672/%2F?heartbeat=10")
    url = settings.amqp_url_with_defaults
    assert "heartbeat=10" in url and "blocked_connection_timeout=300" in url
    assert url.startswith("amqp://u:p@rabbit:5672/%2F?")


def test_every_node_of_a_cluster_url_gets_the_connection_defaults() -> None:
    from schemas.publisher import node_parameters

    settings = Settings(amqp_url="amqp://u:p@a:5672/v, amqp://u:p@b:5673/v?heartbeat=10")
    nodes = node_parameters(settings.amqp_url_with_defaults)
    assert [(n.host, n.port) for n in nodes] == [("a", 5672), ("b", 5673)]
    assert [n.heartbeat for n in nodes] == [60, 10]
    assert all(n.blocked_connection_timeout == 300 for n in nodes)


def test_json_logs_carry_the_ids_of_the_message_being_handled() -> None:
    import json
    import logging

    from worker.observability import LOG_CONTEXT, JsonFormatter

    token = LOG_CONTEXT.set({"portal_id": "p1", "asset_id": "a1", "message_id": "m1"})
    try:
        record = logging.LogRecord(
            "worker", logging.WARNING, __file__, 1, "hashed %s", ("x",), None
        )
        line = JsonFormatter().format(record)
    finally:
        LOG_CONTEXT.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hashed x"
    assert (entry["portal_id"], entry["asset_id"], entry["message_id"]) == ("p1", "a1", "m1")
    assert entry["level"] == "WARNING" and "\n" not in line


def test_source_roots_and_hosts_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DUPFINDER_SOURCE_ROOTS", f"{tmp_path}/a, {tmp_path}/b")
    monkeypatch.setenv("DUPFINDER_SOURCE_HOSTS", "images.example.org,10.20.0.0/16")
    settings = Settings()
    assert settings.source_roots == (tmp_path / "a", tmp_path / "b")
    assert settings.source_hosts == ("images.example.org", "10.20.0.0/16")
    monkeypatch.setenv("DUPFINDER_SOURCE_ROOTS", "relative/path")
    with pytest.raises(ValidationError, match="absolute"):
        Settings()


def test_bad_settings_are_told_one_line_a_variable_with_exit_status_2() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "check"],
        env={
            **os.environ,
            "DUPFINDER_MAX_DISTANCE": "99",
            "DUPFINDER_THREADS": "many",
            "DUPFINDER_MATCH": "fuzzy",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert "Traceback" not in result.stderr
    told = dict(line.removeprefix("dupfinder: ").split("=", 1) for line in lines)
    assert (
        told["DUPFINDER_MAX_DISTANCE"].startswith("'99': ")
        and "32" in told["DUPFINDER_MAX_DISTANCE"]
    )
    assert "integer" in told["DUPFINDER_THREADS"]
    assert "'phash' or 'verified'" in told["DUPFINDER_MATCH"]


def test_the_write_and_read_concerns_reach_the_driver() -> None:
    import asyncio

    from worker.store import AssetStore

    async def options(concern: str) -> tuple[dict[str, object], str | None, bool, bool]:
        settings = Settings(mongodb_url="mongodb://127.0.0.1:1/", mongodb_write_concern=concern)
        store = AssetStore.from_settings(settings)  # no connection until the first command
        client = store._client
        try:
            return (
                client.write_concern.document,
                client.read_concern.level,
                client.options.retry_writes,
                client.options.retry_reads,
            )
        finally:
            await store.close()

    assert asyncio.run(options("majority")) == ({"w": "majority"}, "majority", True, True)
    assert asyncio.run(options("1")) == ({"w": 1}, "local", True, True)


def test_the_write_batch_defaults_are_the_batchers_own() -> None:
    from worker import batching

    settings = Settings()
    assert (settings.write_batch, settings.write_window_ms) == (
        batching.MAX_WRITES,
        batching.WINDOW_MS,
    )
