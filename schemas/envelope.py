"""Dramatiq's JSON envelope, validated strictly.

Dramatiq trusts its envelope: `"options": null` crashes a consumer thread, a body whose
`queue_name` differs from its queue kills worker threads, and options such as `max_retries` or
`throws` in the body override the actor's own. The worker therefore refuses any envelope that is
not exactly this shape (see RELIABILITY-NOTES.md) and dead-letters it.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from pydantic.json_schema import SkipJsonSchema

from schemas.contract import ACTORS, ActorRoute

NonEmpty = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class EnvelopeOptions(BaseModel):
    """The options a message may carry: only those Dramatiq itself writes while retrying.

    Anything else (`max_retries`, `time_limit`, `throws`, callbacks...) would let a publisher
    override the worker's retry budget and limits, so it is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    # Optional but never null, in the model and in its JSON Schema alike (`SkipJsonSchema`).
    retries: Annotated[StrictInt, Field(ge=0)] | SkipJsonSchema[None] = None
    """How many times the worker has retried this message."""
    traceback: StrictStr | SkipJsonSchema[None] = None
    """The traceback of the last failed attempt."""
    requeue_timestamp: StrictInt | SkipJsonSchema[None] = None
    """When the last retry was enqueued, ms since the epoch."""
    eta: StrictInt | SkipJsonSchema[None] = None
    """When a delayed retry becomes due, ms since the epoch."""

    @model_validator(mode="before")
    @classmethod
    def _absent_not_null(cls, data: Any) -> Any:
        # Dramatiq does arithmetic on these (`retries += 1`): an explicit null would crash its
        # retry middleware, whose errors are swallowed and end in an ack, i.e. a lost message.
        if isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"options may be absent but not null: {', '.join(nulls)}")
        return data


class Envelope(BaseModel):
    """One message as it travels on the wire: Dramatiq's seven fields, no more, no fewer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    queue_name: NonEmpty
    """The queue the message is published to; must equal the queue it is consumed from."""
    actor_name: NonEmpty
    """The actor that handles it (see the contract table)."""
    args: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1)]
    """Exactly one JSON object: the payload."""
    kwargs: Annotated[dict[str, Any], Field(max_length=0)]
    """Always empty."""
    options: EnvelopeOptions
    """Retry bookkeeping written by the worker; `{}` when publishing."""
    message_id: NonEmpty
    """Unique per message and stable across redeliveries; a UUID is customary."""
    message_timestamp: Annotated[StrictInt, Field(ge=0)]
    """When the message was first published, ms since the epoch."""


def build_envelope(
    payload: BaseModel, *, message_id: str | None = None, route: ActorRoute | None = None
) -> dict[str, Any]:
    """The JSON-ready envelope that carries `payload` to its actor (or to `route`)."""
    route = route or ACTORS[type(payload).__name__]
    return {
        "queue_name": route.queue_name,
        "actor_name": route.actor_name,
        "args": [payload.model_dump(mode="json", exclude_none=True)],
        "kwargs": {},
        "options": {},
        "message_id": message_id or str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
