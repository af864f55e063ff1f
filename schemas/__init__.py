"""The dupfinder wire contract, v2.

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
    Decided,
    DecisionsForgotten,
    DistinctMarked,
    DuplicatesDeleted,
    DuplicateSet,
    DuplicatesFound,
    Event,
    MergedMetadata,
    OriginalChanged,
    Rejection,
    RequestFailed,
    SetKept,
    SetMember,
)
from schemas.messages import (
    AssetRemoved,
    AssetUploaded,
    DeleteDuplicates,
    FindDuplicates,
    ForgetDecisions,
    KeepSet,
    MakeOriginal,
    MarkDistinct,
    Merge,
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
    "Decided",
    "DecisionsForgotten",
    "DeleteDuplicates",
    "DistinctMarked",
    "DuplicateSet",
    "DuplicatesDeleted",
    "DuplicatesFound",
    "Envelope",
    "EnvelopeOptions",
    "Event",
    "FindDuplicates",
    "ForgetDecisions",
    "KeepSet",
    "MakeOriginal",
    "MarkDistinct",
    "Merge",
    "MergedMetadata",
    "OriginalChanged",
    "Payload",
    "Rejection",
    "RequestFailed",
    "Scope",
    "SetKept",
    "SetMember",
    "Sort",
    "build_envelope",
]
