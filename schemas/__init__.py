"""The dupfinder wire contract, v1.

Everything a portal needs to talk to the worker: queue and actor names (`contract`), the Dramatiq
envelope (`envelope`), the payloads a portal sends (`messages`), the events the worker publishes
(`events`) and a small typed publisher for Python portals (`publisher`).
"""

from schemas.contract import (
    ACTORS,
    ASSETS_QUEUE,
    COMMANDS_QUEUE,
    RESULTS_EXCHANGE,
    SEARCHES_QUEUE,
    ActorRoute,
)
from schemas.envelope import Envelope, EnvelopeOptions, build_envelope
from schemas.events import (
    AssetFailed,
    AssetHashed,
    CommandRejected,
    DuplicatesDeleted,
    DuplicateSet,
    DuplicatesFound,
    Event,
    OriginalChanged,
    Rejection,
    RequestFailed,
    SetMember,
)
from schemas.messages import (
    AssetRemoved,
    AssetUploaded,
    DeleteDuplicates,
    FindDuplicates,
    MakeOriginal,
    Payload,
    Scope,
    Sort,
)

__all__ = [
    "ACTORS",
    "ASSETS_QUEUE",
    "COMMANDS_QUEUE",
    "RESULTS_EXCHANGE",
    "SEARCHES_QUEUE",
    "ActorRoute",
    "AssetFailed",
    "AssetHashed",
    "AssetRemoved",
    "AssetUploaded",
    "CommandRejected",
    "DeleteDuplicates",
    "DuplicateSet",
    "DuplicatesDeleted",
    "DuplicatesFound",
    "Envelope",
    "EnvelopeOptions",
    "Event",
    "FindDuplicates",
    "MakeOriginal",
    "OriginalChanged",
    "Payload",
    "Rejection",
    "RequestFailed",
    "Scope",
    "SetMember",
    "Sort",
    "build_envelope",
]
