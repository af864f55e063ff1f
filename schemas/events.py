"""Events the worker publishes to the `dupfinder.results` topic exchange.

The routing key of each event is `<portal_id>.<event_type>` (its `routing_key`), so a portal
binds `<portal_id>.#` and RabbitMQ's topic permissions can keep it to its own events; the body is
`model_dump(mode="json")`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.contract import result_routing_key
from schemas.messages import MatchRule

Phash = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
"""64-bit pHash as 16 lowercase hex digits: the text of `str(imagehash.phash(image))`."""


class Event(BaseModel):
    """Common configuration of every result event."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    event_type: ClassVar[str]
    portal_id: str

    @property
    def routing_key(self) -> str:
        """Where this event is published: `<portal_id>.<event_type>`."""
        return result_routing_key(self.portal_id, self.event_type)


class AssetHashed(Event):
    """An asset's image was read and hashed (also re-published on replays)."""

    event_type: ClassVar[str] = "asset.hashed"
    portal_id: str
    """The tenant."""
    asset_id: str
    """The asset."""
    phash: Phash
    """Its perceptual hash."""
    width: int
    """Width in pixels, after EXIF orientation."""
    height: int
    """Height in pixels, after EXIF orientation."""


class AssetRemovalStored(Event):
    """An `asset-removed` is stored: the asset leaves every later search, and no later upload
    brings it back (re-published on replays)."""

    event_type: ClassVar[str] = "asset.removed"
    portal_id: str
    """The tenant."""
    asset_id: str
    """The asset removed."""


FailureReason = Literal[
    "invalid_message",
    "source_not_found",
    "source_refused",
    "source_unavailable",
    "store_unavailable",
    "publish_failed",
    "memory_busy",
    "unreadable_image",
    "unsupported_format",
    "too_large",
    "asset_deleted",
    "internal_error",
]
"""Why an upload failed: the payload broke the contract; the source is missing, refused, or
kept failing; the database or RabbitMQ kept failing; the decode memory stayed taken; the bytes
are no image, one this build cannot decode, or too large; the asset is deleted; or an unforeseen
fault outlasted every retry (`detail` names it)."""

RequestFailure = Literal["invalid_message", "store_unavailable", "publish_failed", "internal_error"]
"""Why a search failed."""

CommandFailure = Literal[
    "invalid_message",
    "asset_not_found",
    "original_not_found",
    "store_unavailable",
    "publish_failed",
    "internal_error",
]
"""Why a command was refused as a whole."""


class AssetFailed(Event):
    """An upload could not be hashed; the asset is marked failed with the same reason."""

    event_type: ClassVar[str] = "asset.failed"
    portal_id: str
    """The tenant."""
    asset_id: str
    """The asset."""
    reason: FailureReason
    """Stable machine code (see `FailureReason`)."""
    detail: str
    """Human-readable explanation."""


MatchKind = Literal["original", "identical", "same_phash", "near", "mirrored", "rotated"]
"""How a member matches its set's original: `original` (it is the original), `identical` (same
bytes), `same_phash`, `near` (see `distance` and `similarity`), `mirrored` or `rotated`."""


OriginalReason = Literal["pinned", "most_pixels", "earliest_upload", "smallest_id"]
"""Why the original is the original: it was pinned (`make-original`, the latest pin first), it
has the most pixels, the earliest upload, or, all else equal, the smallest asset id."""


class SetMember(BaseModel):
    """One asset of a duplicate set."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    asset_id: str
    """The asset."""
    title: str
    """Its title."""
    description: str
    """Its description."""
    tags: list[str]
    """Its tags."""
    width: int
    """Width in pixels."""
    height: int
    """Height in pixels."""
    uploaded_at: AwareDatetime
    """Upload date."""
    phash: Phash
    """Its perceptual hash."""
    distance: int
    """Hamming distance to the set's original (0 for the original itself); for a mirrored or
    rotated member, the distance after turning the original the same way."""
    original: bool
    """True for the first member only."""
    match: MatchKind
    """How it matches the original."""
    similarity: Annotated[float, Field(ge=-1, le=1)] | None = None
    """`verified` rule only: signature correlation with the original, 1 = the same picture."""
    original_reason: OriginalReason | None = None
    """The original only: the first rule of original order that put it before the runner-up
    (see `OriginalReason`); null for the other members."""
    new: bool = False
    """In a reopened set: this member is not among the assets the user kept together."""


class DuplicateSet(BaseModel):
    """Assets that duplicate one original; the original comes first."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    set_id: str
    """Stable id of the set: the asset id of its original."""
    assets: list[SetMember]
    """Original first, then the others in the requested sort."""
    kept: bool = False
    """Every member was kept together by a `keep-set` decision; only answered with
    `include_kept: true`."""
    reopened: bool = False
    """A `keep-set` decision kept some of these members together, and new ones joined them
    since (flagged `new`); the set is answered again for review."""


class DuplicatesFound(Event):
    """One page of the answer to a `find-duplicates` request."""

    event_type: ClassVar[str] = "duplicates.found"
    request_id: str
    """The request this answers."""
    portal_id: str
    """The tenant."""
    match: MatchRule
    """The rule the sets were formed with."""
    max_distance: int | None
    """The distance of the `phash` rule; null under `verified`."""
    total_sets: int
    """Sets in the whole answer, over all pages."""
    page: int
    """1-based page number."""
    pages: int
    """How many pages the answer has (at least 1)."""
    sets: list[DuplicateSet]
    """The sets on this page, in the asset bank's order."""


class RequestFailed(Event):
    """A `find-duplicates` request could not be answered."""

    event_type: ClassVar[str] = "request.failed"
    request_id: str
    """The failed request, when it could be read."""
    portal_id: str
    """The tenant."""
    reason: RequestFailure
    """Stable machine code (see `RequestFailure`)."""
    detail: str
    """Human-readable explanation."""


class OriginalChanged(Event):
    """A `make-original` command took effect."""

    event_type: ClassVar[str] = "original.changed"
    command_id: str
    """The command."""
    portal_id: str
    """The tenant."""
    asset_id: str
    """The new original."""


RejectionReason = Literal["not_found", "is_original", "not_a_duplicate", "distinct"]


class Rejection(BaseModel):
    """Why one asset of a delete command was not deleted."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    asset_id: str
    """The asset left alone."""
    reason: RejectionReason
    """`not_found` (unknown in this portal, or never hashed), `is_original` (the original, or an
    asset that outranks it), `not_a_duplicate` (farther than `max_distance` from the original),
    `distinct` (a `mark-distinct` decision says it is not a duplicate of the original)."""


class MergedMetadata(BaseModel):
    """The original's metadata after a `delete-duplicates`, as its `merge` policy made it."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    asset_id: str
    """The original."""
    title: str
    """Its title."""
    description: str
    """Its description."""
    tags: list[str]
    """Its tags."""


class DuplicatesDeleted(Event):
    """A `delete-duplicates` command took effect; the portal removes the deleted files and
    applies `original` to its own record."""

    event_type: ClassVar[str] = "duplicates.deleted"
    command_id: str
    """The command."""
    portal_id: str
    """The tenant."""
    original_id: str
    """The set's original."""
    deleted: list[str]
    """Assets now deleted (including ones deleted before)."""
    rejected: list[Rejection]
    """Assets left alone, with the reason."""
    original: MergedMetadata
    """The original's metadata as merged (its own when nothing was merged); the worker stores
    the same."""


class Decided(BaseModel):
    """One decision of a `mark-distinct` or `keep-set` command, as recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    asset_ids: list[str]
    """The assets the decision now holds: those given that are live in this portal (none when
    fewer than two were, and then nothing is recorded)."""
    rejected: list[Rejection]
    """Assets left out, reason `not_found` (unknown in this portal, deleted or never hashed)."""


class DistinctMarked(Event):
    """A `mark-distinct` command took effect: no two assets of a decision share a set again."""

    event_type: ClassVar[str] = "distinct.marked"
    command_id: str
    """The command."""
    portal_id: str
    """The tenant."""
    decisions: list[Decided]
    """One per set given (one for `asset_ids`), in order."""


class SetKept(Event):
    """A `keep-set` command took effect: sets within a decision leave later answers."""

    event_type: ClassVar[str] = "set.kept"
    command_id: str
    """The command."""
    portal_id: str
    """The tenant."""
    decisions: list[Decided]
    """One per set given (one for `asset_ids`), in order."""


class DecisionsForgotten(Event):
    """A `forget-decisions` command took effect."""

    event_type: ClassVar[str] = "decisions.forgotten"
    command_id: str
    """The command."""
    portal_id: str
    """The tenant."""
    asset_ids: list[str]
    """The given assets known in this portal (live or deleted)."""
    forgotten: int
    """How many decisions were removed (0 when none named them)."""
    rejected: list[Rejection]
    """Assets unknown in this portal (`not_found`)."""


class CommandRejected(Event):
    """A command was refused as a whole."""

    event_type: ClassVar[str] = "command.rejected"
    command_id: str
    """The command, when it could be read."""
    portal_id: str
    """The tenant."""
    reason: CommandFailure
    """Stable machine code (see `CommandFailure`)."""
    detail: str
    """Human-readable explanation."""


ALL_EVENTS: tuple[type[Event], ...] = (
    AssetHashed,
    AssetFailed,
    AssetRemovalStored,
    DuplicatesFound,
    RequestFailed,
    OriginalChanged,
    DuplicatesDeleted,
    DistinctMarked,
    SetKept,
    DecisionsForgotten,
    CommandRejected,
)
