"""The published JSON Schemas and the worker agree on every message, both ways.

A portal checks its messages against `docs/schemas/<Name>Envelope.json`; the worker checks them
with the models. Any message one accepts and the other refuses is a lie in the contract: either
the portal is told a message is fine that the worker then dead-letters, or a portal validating
strictly is kept from sending what the worker would take. Generated and hostile messages go to
both here, and any disagreement fails.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from schemas import messages
from schemas.contract import ROUTES, ActorRoute
from schemas.document import example_envelope, inbound, json_schemas
from schemas.envelope import Envelope, EnvelopeOptions
from worker.broker import StrictEncoder

DELETE = object()
"""Stands for "leave the field out"."""

#: (message name, payload model, route) of everything a portal publishes.
INBOUND = inbound()
MODELS = {route.actor_name: model for _, model, route in INBOUND}
SCHEMAS = json_schemas()
VALIDATORS = {
    name: Draft202012Validator(
        SCHEMAS[f"{name}Envelope"], format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for name, _, _ in INBOUND
}

VALUES: list[Any] = [
    DELETE,
    None,
    0,
    -1,
    1795599000,
    1795599000000,
    1.5,
    True,
    "",
    " ",
    "a",
    " a",
    "a ",
    "a\tb",
    "a\x1b[2J",
    "a\u202eb",
    "a\x85",
    "\ufeffa",
    "é",
    "a" * 256,
    "a" * 257,
    "p" * 64,
    "p" * 65,
    "acme",
    "acme.eu",
    "ac#me",
    "A-b_1",
    "acme corp",
    "2026-11-25T09:30:00Z",
    "2026-11-25T09:30:00+05:30",
    "2026-11-25T09:30:00.123456Z",
    "2026-11-25T09:30Z",
    "2026-11-25T09:30:00",
    "2026-11-25 09:30:00+00:00",
    "2026-02-30T00:00:00Z",
    "2026-11-25t09:30:00z",
    "2026-11-25T24:00:00Z",
    "2026-11-25T09:30:60Z",
    "relative.jpg",
    "/abs.jpg",
    "file:///a.jpg",
    "file://host/a.jpg",
    "http://h/a.jpg",
    "https://h/a.jpg",
    "s3://b/a",
    [],
    ["t"],
    ["t", "t"],
    ["t\x00"],
    [""],
    [1],
    {},
    {"x": 1},
    [{}],
    [{"a": 1}, {"b": 2}],
    "verified",
    "phash",
    32,
    33,
    5,
    "uploaded_at",
    "title",
    "pixels",
    "asc",
    "desc",
    "up",
    {"field": "title"},
    {"order": "sideways"},
    {"asset_ids": []},
    {"asset_ids": ["a", "b"]},
    {"tags_all": ["t"]},
    {"text": ""},
    {"uploaded_from": "2026-11-25T09:30:00Z"},
    {"uploaded_from": "2026-11-26T00:00:00Z", "uploaded_to": "2026-11-25T00:00:00Z"},
    {"retries": 1},
    {"retries": None},
    {"eta": None},
    {"max_retries": 99},
    [["a", "b"]],
    [["a", "a"]],
    [["a"]],
    [[]],
    ["a", "b", "c"],
    {"tags": "union"},
    {"description": "append", "title": "longest"},
    {"tags": "merge"},
    {"unknown": "keep"},
    False,
]

FIELDS = sorted({name for _, model, _ in INBOUND for name in model.model_fields} | {"unknown"})
ENVELOPE_FIELDS = [*Envelope.model_fields, "unknown"]
PATHS = (
    [("envelope", f) for f in ENVELOPE_FIELDS]
    + [("payload", f) for f in FIELDS]
    + [("scope", f) for f in [*messages.Scope.model_fields, "unknown"]]
    + [("sort", f) for f in [*messages.Sort.model_fields, "unknown"]]
    + [("merge", f) for f in [*messages.Merge.model_fields, "unknown"]]
    + [("options", f) for f in [*EnvelopeOptions.model_fields, "unknown"]]
)


def base(name: str, model: type[messages.Payload], route: ActorRoute) -> dict[str, Any]:
    """The documented example message, a copy of it to mutate."""
    return copy.deepcopy(example_envelope(model, route))


def mutate(envelope: dict[str, Any], where: str, field: str, value: Any) -> None:
    payload = (
        envelope["args"][0] if envelope.get("args") and isinstance(envelope["args"], list) else None
    )
    target: Any
    if where == "envelope":
        target = envelope
    elif where == "payload":
        target = payload
    elif where in ("scope", "sort", "merge"):
        target = payload.setdefault(where, {}) if isinstance(payload, dict) else None
        if not isinstance(target, dict):
            return
    else:
        target = envelope.get("options")
    if not isinstance(target, dict):
        return
    if value is DELETE:
        target.pop(field, None)
    else:
        target[field] = copy.deepcopy(value)


def worker_accepts(body: bytes, queue: str) -> bool:
    """What the worker does with `body` consumed from `queue`: take it, or dead-letter it."""
    try:
        message = StrictEncoder().decode(body)
    except Exception:  # DecodeError: dead-lettered as malformed
        return False
    route = ROUTES.get(message["actor_name"])
    if route is None or route.queue_name != queue or message["queue_name"] != queue:
        return False  # the strict consumer's refusals
    if message["kwargs"] or len(message["args"]) != 1:
        return False
    try:
        MODELS[route.actor_name].model_validate(message["args"][0])
    except ValidationError:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(INBOUND),
    st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(VALUES)), max_size=3),
)
def test_the_schemas_and_the_worker_agree(
    inbound: tuple[str, type[messages.Payload], ActorRoute],
    changes: list[tuple[tuple[str, str], Any]],
) -> None:
    name, model, route = inbound
    envelope = base(name, model, route)
    for (where, field), value in changes:
        mutate(envelope, where, field, value)
    body = json.dumps(envelope).encode()
    schema_says = VALIDATORS[name].is_valid(json.loads(body))
    worker_says = worker_accepts(body, route.queue_name)
    assert schema_says == worker_says, (
        f"{name}: the schema {'accepts' if schema_says else 'refuses'} and the worker "
        f"{'accepts' if worker_says else 'refuses'}: {json.dumps(envelope)[:600]}"
    )


def test_every_example_is_accepted_by_both() -> None:
    for name, model, route in INBOUND:
        body = json.dumps(base(name, model, route)).encode()
        assert VALIDATORS[name].is_valid(json.loads(body)), name
        assert worker_accepts(body, route.queue_name), name
