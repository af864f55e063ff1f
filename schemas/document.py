"""The contract as documents: an AsyncAPI 3 description and a JSON Schema per payload and event.

Generated from the models, never edited by hand:

    python -m schemas.document docs/

writes `docs/asyncapi.json` and `docs/schemas/*.json`; a test regenerates them and fails when
the committed copies differ, so the documents cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas import events, messages
from schemas.contract import (
    ACTORS,
    BACKFILL_ROUTE,
    CONTRACT_VERSION,
    RESULTS_EXCHANGE,
    ActorRoute,
    queue_declarations,
)
from schemas.envelope import EnvelopeOptions

PAYLOADS: tuple[type[messages.Payload], ...] = (
    messages.AssetUploaded,
    messages.AssetRemoved,
    messages.FindDuplicates,
    messages.MakeOriginal,
    messages.DeleteDuplicates,
    messages.MarkDistinct,
    messages.KeepSet,
    messages.ForgetDecisions,
)

#: One valid example of every message, checked against its model when the document is built.
EXAMPLES: dict[str, dict[str, Any]] = {
    "AssetUploaded": {
        "portal_id": "acme",
        "asset_id": "42",
        "source": "/assets/acme/42.jpg",
        "title": "Harbour at dawn",
        "description": "",
        "tags": ["sea", "boats"],
        "uploaded_at": "2026-11-25T09:30:00Z",
    },
    "AssetRemoved": {"portal_id": "acme", "asset_id": "42"},
    "FindDuplicates": {
        "request_id": "r-7",
        "portal_id": "acme",
        "scope": {"tags_any": ["sea"]},
        "sort": {"field": "uploaded_at", "order": "desc"},
        "match": "verified",
    },
    "MakeOriginal": {"command_id": "c-1", "portal_id": "acme", "asset_id": "43"},
    "DeleteDuplicates": {
        "command_id": "c-2",
        "portal_id": "acme",
        "original_id": "43",
        "asset_ids": ["42"],
        "merge": {"tags": "union", "description": "append", "title": "keep"},
    },
    "MarkDistinct": {"command_id": "c-3", "portal_id": "acme", "asset_ids": ["43", "44"]},
    "KeepSet": {"command_id": "c-4", "portal_id": "acme", "sets": [["45", "46"], ["47", "48"]]},
    "ForgetDecisions": {"command_id": "c-5", "portal_id": "acme", "asset_ids": ["44"]},
    "AssetHashed": {
        "portal_id": "acme",
        "asset_id": "42",
        "phash": "dd1e7963d1889865",
        "width": 4000,
        "height": 3000,
    },
    "AssetFailed": {
        "portal_id": "acme",
        "asset_id": "42",
        "reason": "unreadable_image",
        "detail": "cannot decode JPEG pixel data: image file is truncated",
    },
    "AssetRemovalStored": {"portal_id": "acme", "asset_id": "42"},
    "DuplicatesFound": {
        "request_id": "r-7",
        "portal_id": "acme",
        "match": "verified",
        "max_distance": None,
        "total_sets": 1,
        "page": 1,
        "pages": 1,
        "sets": [
            {
                "set_id": "43",
                "assets": [
                    {
                        "asset_id": "43",
                        "title": "Harbour",
                        "description": "",
                        "tags": ["sea"],
                        "width": 4000,
                        "height": 3000,
                        "uploaded_at": "2026-11-20T08:00:00Z",
                        "phash": "dd1e7963d1889865",
                        "distance": 0,
                        "original": True,
                        "match": "original",
                        "similarity": 1.0,
                        "original_reason": "most_pixels",
                        "new": False,
                    },
                    {
                        "asset_id": "42",
                        "title": "Harbour at dawn",
                        "description": "",
                        "tags": ["sea"],
                        "width": 1600,
                        "height": 1200,
                        "uploaded_at": "2026-11-25T09:30:00Z",
                        "phash": "dd1e7b63d1889861",
                        "distance": 2,
                        "original": False,
                        "match": "near",
                        "similarity": 0.987,
                        "original_reason": None,
                        "new": False,
                    },
                ],
                "kept": False,
                "reopened": False,
            }
        ],
    },
    "RequestFailed": {
        "request_id": "r-7",
        "portal_id": "acme",
        "reason": "invalid_message",
        "detail": "max_distance: Input should be less than or equal to 32",
    },
    "OriginalChanged": {"command_id": "c-1", "portal_id": "acme", "asset_id": "43"},
    "DuplicatesDeleted": {
        "command_id": "c-2",
        "portal_id": "acme",
        "original_id": "43",
        "deleted": ["42"],
        "rejected": [{"asset_id": "44", "reason": "distinct"}],
        "original": {
            "asset_id": "43",
            "title": "Harbour",
            "description": "Harbour at dawn\nShot from the pier",
            "tags": ["sea", "boats"],
        },
    },
    "DistinctMarked": {
        "command_id": "c-3",
        "portal_id": "acme",
        "decisions": [{"asset_ids": ["43", "44"], "rejected": []}],
    },
    "SetKept": {
        "command_id": "c-4",
        "portal_id": "acme",
        "decisions": [
            {"asset_ids": ["45", "46"], "rejected": []},
            {"asset_ids": [], "rejected": [{"asset_id": "48", "reason": "not_found"}]},
        ],
    },
    "DecisionsForgotten": {
        "command_id": "c-5",
        "portal_id": "acme",
        "asset_ids": ["44"],
        "forgotten": 1,
        "rejected": [],
    },
    "CommandRejected": {
        "command_id": "c-1",
        "portal_id": "acme",
        "reason": "asset_not_found",
        "detail": "no live asset '99' in this portal",
    },
}

_REF = "#/components/schemas/{model}"

#: Which events answer each payload: its outcome, then its failure.
REPLIES: dict[str, tuple[str, ...]] = {
    "AssetUploaded": ("AssetHashed", "AssetFailed"),
    "AssetRemoved": ("AssetRemovalStored", "AssetFailed"),
    "FindDuplicates": ("DuplicatesFound", "RequestFailed"),
    "MakeOriginal": ("OriginalChanged", "CommandRejected"),
    "DeleteDuplicates": ("DuplicatesDeleted", "CommandRejected"),
    "MarkDistinct": ("DistinctMarked", "CommandRejected"),
    "KeepSet": ("SetKept", "CommandRejected"),
    "ForgetDecisions": ("DecisionsForgotten", "CommandRejected"),
}


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [*PAYLOADS, *events.ALL_EVENTS, EnvelopeOptions]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    return dict(top["$defs"])


def _envelope_schema(
    name: str, payload: type[messages.Payload], route: ActorRoute, ref: str = _REF
) -> dict[str, Any]:
    return {
        "type": "object",
        "title": f"{name}Envelope",
        "description": (
            f"Dramatiq envelope carrying one {payload.__name__} to `{route.actor_name}`."
        ),
        "additionalProperties": False,
        "required": [
            "queue_name",
            "actor_name",
            "args",
            "kwargs",
            "options",
            "message_id",
            "message_timestamp",
        ],
        "properties": {
            "queue_name": {"const": route.queue_name},
            "actor_name": {"const": route.actor_name},
            "args": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "prefixItems": [{"$ref": ref.format(model=payload.__name__)}],
            },
            "kwargs": {"type": "object", "maxProperties": 0},
            "options": {"$ref": ref.format(model="EnvelopeOptions")},
            "message_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "Unique per message, stable across redeliveries.",
            },
            "message_timestamp": {
                "type": "integer",
                "minimum": 0,
                "description": "Publication time, ms since the epoch.",
            },
        },
    }


def example_envelope(payload: type[messages.Payload], route: ActorRoute) -> dict[str, Any]:
    """The documented example of a whole message: `payload`'s example in its envelope."""
    return {
        "queue_name": route.queue_name,
        "actor_name": route.actor_name,
        "args": [_checked_example(payload.__name__)],
        "kwargs": {},
        "options": {},
        "message_id": "5b0e2c1e-8f39-4c55-9a8c-2f1b7d0b6a11",
        "message_timestamp": 1795599000000,
    }


def _checked_example(name: str) -> dict[str, Any]:
    model = getattr(messages, name, None) or getattr(events, name)
    model.model_validate(EXAMPLES[name])
    return EXAMPLES[name]


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the whole message interface."""
    schemas = _schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components_messages: dict[str, Any] = {}
    for name, payload, route in inbound():
        channel = route.queue_name.split(".", 1)[1]
        schemas[f"{name}Envelope"] = _envelope_schema(name, payload, route)
        components_messages[name] = {
            "name": name,
            "title": name,
            "summary": (payload.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(model=f"{name}Envelope")},
            "examples": [{"name": "example", "payload": example_envelope(payload, route)}],
            "bindings": {"amqp": {"messageType": route.actor_name, "bindingVersion": "0.3.0"}},
        }
        channels.setdefault(
            channel,
            {
                "address": route.queue_name,
                "description": f"Work queue; dead letters go to `{route.queue_name}.XQ`.",
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {
                            "name": route.queue_name,
                            "durable": True,
                            "exclusive": False,
                            "autoDelete": False,
                            "vhost": "/",
                        },
                        "bindingVersion": "0.3.0",
                    }
                },
                # Every queue behind this one, with its exact declaration arguments, for
                # each `DUPFINDER_QUEUE_TYPE`.
                "x-queue-declarations": queue_declarations(route.queue_name),
                "x-quorum-queue-declarations": queue_declarations(route.queue_name, "quorum"),
            },
        )
        channels[channel]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        operations[f"send{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"The portal publishes {payload.__name__} for `{route.actor_name}`.",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
            "reply": {
                "channel": {"$ref": "#/channels/results"},
                "messages": [
                    {"$ref": f"#/channels/results/messages/{answer}"}
                    for answer in REPLIES[payload.__name__]
                ],
            },
            # Persistent, and returned if no queue takes it (with publisher confirms).
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
        }
    channels["results"] = {
        "address": RESULTS_EXCHANGE,
        "description": "Durable topic exchange; the routing key of every event is "
        "`<portal_id>.<event type>`, so a portal binds `<portal_id>.#`.",
        "messages": {},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": RESULTS_EXCHANGE,
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": "0.3.0",
            }
        },
    }
    for event in events.ALL_EVENTS:
        name = event.__name__
        components_messages[name] = {
            "name": name,
            "title": event.event_type,
            "summary": (event.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(model=name)},
            "examples": [{"name": "example", "payload": _checked_example(name)}],
            "bindings": {"amqp": {"messageType": event.event_type, "bindingVersion": "0.3.0"}},
        }
        channels["results"]["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        operations[f"receive{name}"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/results"},
            "summary": f"The portal reads `<portal_id>.{event.event_type}` events.",
            "messages": [{"$ref": f"#/channels/results/messages/{name}"}],
            "bindings": {
                "amqp": {
                    "cc": [f"{{portal_id}}.{event.event_type}"],
                    "deliveryMode": 2,
                    "bindingVersion": "0.3.0",
                }
            },
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "dupfinder",
            "version": f"{CONTRACT_VERSION}.0.0",
            "description": "Duplicate-image finder for digital-asset portals: what a portal "
            "publishes to RabbitMQ and what the worker answers. Generated from schemas/ by "
            "`python -m schemas.document docs/`.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": components_messages, "schemas": schemas},
    }


def inbound() -> list[tuple[str, type[messages.Payload], ActorRoute]]:
    """(message name, payload model, route) of everything a portal publishes."""
    inbound = [(p.__name__, p, ACTORS[p.__name__]) for p in PAYLOADS]
    inbound.append(("AssetUploadedBackfill", messages.AssetUploaded, BACKFILL_ROUTE))
    return inbound


def json_schemas() -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema (2020-12) of every payload, event and envelope, by name.

    An envelope's schema (`<Name>Envelope`) is the whole message a portal publishes, its
    payload included, checked as strictly as the worker checks it.
    """
    result = {}
    for model in (*PAYLOADS, *events.ALL_EVENTS):
        schema = model.model_json_schema()
        result[model.__name__] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **schema,
        }
    local = "#/$defs/{model}"
    for name, payload, route in inbound():
        _, top = models_json_schema(
            [(payload, "validation"), (EnvelopeOptions, "validation")], ref_template=local
        )
        result[f"{name}Envelope"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **_envelope_schema(name, payload, route, local),
            "$defs": top["$defs"],
        }
    return result


def render(document: Any) -> str:
    """Stable text of a document: sorted keys would scramble the reading order, so none."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(folder: Path) -> list[Path]:
    """Write every document under `folder`; returns the paths written."""
    written = [folder / "asyncapi.json"]
    folder.mkdir(parents=True, exist_ok=True)
    written[0].write_text(render(asyncapi()))
    (folder / "schemas").mkdir(exist_ok=True)
    for name, schema in json_schemas().items():
        path = folder / "schemas" / f"{name}.json"
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(path)
