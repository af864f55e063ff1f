"""Configuration: environment variables with the DUPFINDER_ prefix, validated up front."""

from __future__ import annotations

import os

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
