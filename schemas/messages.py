"""Payloads a portal sends to the worker (the single element of an envelope's `args`).

Each model refuses unknown fields and wrong types instead of coercing them: a payload that does not
match is a bug in the publisher, and guessing would hide it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

#: Characters no id or tag may hold: C0 and C1 controls, DEL, and the bidirectional overrides
#: and isolates, which can rewrite or disguise what an operator's terminal shows.
_UNPRINTABLE = "\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE_RE = re.compile(f"[{_UNPRINTABLE}]")
_ID_PATTERN = rf"^[^\s{_UNPRINTABLE}]([^{_UNPRINTABLE}]*[^\s{_UNPRINTABLE}])?$"


def _printable(value: str) -> str:
    found = _UNPRINTABLE_RE.search(value)
    if found:
        raise ValueError(
            f"must not contain control characters (found {found.group()!a} at "
            f"position {found.start()})"
        )
    return value


def _printable_id(value: str) -> str:
    if value != value.strip():
        raise ValueError("must not begin or end with blanks")
    return _printable(value)


Id = Annotated[
    StrictStr,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": _ID_PATTERN}),
    AfterValidator(_printable_id),
]
"""A portal, asset, request or command id: opaque text, no surrounding blanks, no control
characters."""

Tag = Annotated[
    StrictStr,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": f"^[^{_UNPRINTABLE}]+$"}),
    AfterValidator(_printable),
]
"""A tag: any text but control characters."""
MaxDistance = Annotated[StrictInt, Field(ge=0, le=32)]
"""Hamming distance between two 64-bit pHashes that still counts as a duplicate (0 = equal)."""

MatchRule = Literal["phash", "verified"]
"""How duplicates are recognised. `phash`: the pHashes are within `max_distance` (the rule of
the product dupfinder replaces). `verified`: candidates from the stored hashes, including the
mirrored and rotated image, each confirmed on its signature (see the README)."""


class Payload(BaseModel):
    """Common configuration of every inbound payload."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class AssetUploaded(Payload):
    """An asset was uploaded, or its metadata changed, or ops replay it for a backfill."""

    portal_id: Id
    """The tenant. Every read and write is scoped by it."""
    asset_id: Id
    """The portal's id of the asset, unique within the portal."""
    source: StrictStr
    """Where to read the image bytes: an absolute path, a `file://` or an `http(s)://` URL."""
    title: Annotated[StrictStr, Field(max_length=4096)] = ""
    """Asset title, kept for display in duplicate sets and for text scopes."""
    description: Annotated[StrictStr, Field(max_length=65536)] = ""
    """Asset description, kept like the title."""
    tags: Annotated[list[Tag], Field(max_length=1000)] = []
    """Asset tags, matched exactly by `tags_all` / `tags_any` scopes."""
    uploaded_at: AwareDatetime
    """When the asset was uploaded (ISO-8601 with a timezone); breaks ties between originals."""

    @field_validator("source")
    @classmethod
    def _source_is_absolute(cls, value: str) -> str:
        if value.startswith("/") or value.startswith(("file:///", "http://", "https://")):
            return value
        raise ValueError("source must be an absolute path, a file:/// URL or an http(s):// URL")


class AssetRemoved(Payload):
    """The portal deleted an asset by its own means: it leaves every later search."""

    portal_id: Id
    """The tenant."""
    asset_id: Id
    """The asset that is gone."""


class Scope(Payload):
    """Which assets a search considers; every given criterion must hold, none given = all."""

    asset_ids: Annotated[list[Id], Field(max_length=1_000_000)] | None = None
    """Only these assets."""
    tags_all: list[Tag] | None = None
    """Assets carrying every one of these tags."""
    tags_any: list[Tag] | None = None
    """Assets carrying at least one of these tags."""
    text: Annotated[StrictStr, Field(min_length=1, max_length=1024)] | None = None
    """Case-insensitive substring of the title, the description or a tag."""
    uploaded_from: AwareDatetime | None = None
    """Uploaded at or after this instant."""
    uploaded_to: AwareDatetime | None = None
    """Uploaded at or before this instant."""

    @model_validator(mode="after")
    def _range_in_order(self) -> Scope:
        if self.uploaded_from and self.uploaded_to and self.uploaded_from > self.uploaded_to:
            raise ValueError("uploaded_from is after uploaded_to")
        return self


class Sort(Payload):
    """How the asset bank is ordered; duplicate sets follow the same order."""

    field: Literal["uploaded_at", "title", "pixels"] = "uploaded_at"
    """Sort key: upload date, title (case-insensitive) or pixel count (width x height)."""
    order: Literal["desc", "asc"] = "desc"
    """Direction."""


class FindDuplicates(Payload):
    """A user opened the duplicate finder over a filter or search of the asset bank."""

    request_id: Id
    """Echoed in the answer, so the portal can match pages to the request."""
    portal_id: Id
    """The tenant."""
    scope: Scope = Scope()
    """The filter or search; empty = the whole portal."""
    sort: Sort = Sort()
    """The asset bank's current order."""
    match: MatchRule | None = None
    """The matching rule; absent = the configured default (`verified` as shipped)."""
    max_distance: MaxDistance | None = None
    """`phash` rule only: largest Hamming distance to the original; absent = the configured
    default."""


class MakeOriginal(Payload):
    """A user clicked "Make original": this asset ranks first in any set it belongs to."""

    command_id: Id
    """Carried out once; a redelivery re-publishes the first outcome."""
    portal_id: Id
    """The tenant."""
    asset_id: Id
    """The asset to pin as original."""


class DeleteDuplicates(Payload):
    """A user deleted one duplicate (trash icon) or all duplicates of a set."""

    command_id: Id
    """Carried out once; a redelivery re-publishes the first outcome."""
    portal_id: Id
    """The tenant."""
    original_id: Id
    """The set's original, which is never deleted."""
    asset_ids: Annotated[list[Id], Field(min_length=1, max_length=10_000)]
    """The duplicates to delete."""
    match: MatchRule | None = None
    """Each asset must still match the original under this rule; absent = the configured
    default. Send the rule the sets were found with."""
    max_distance: MaxDistance | None = None
    """`phash` rule only: each asset must still be this close to the original; absent = the
    configured default."""
