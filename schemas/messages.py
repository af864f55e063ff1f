"""Payloads a portal sends to the worker (the single element of an envelope's `args`).

Each model refuses unknown fields and wrong types instead of coercing them: a payload that does not
match is a bug in the publisher, and guessing would hide it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict, SkipJsonSchema

from schemas.contract import PORTAL_ID_PATTERN

#: Characters no id or tag may hold: C0 and C1 controls, DEL, and the bidirectional overrides
#: and isolates, which can rewrite or disguise what an operator's terminal shows.
_UNPRINTABLE = "\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE_RE = re.compile(f"[{_UNPRINTABLE}]")
_ID_PATTERN = rf"^[^\s{_UNPRINTABLE}]([^{_UNPRINTABLE}]*[^\s{_UNPRINTABLE}])?$"


#: RFC 3339 date-times as the contract takes them: seconds and a timezone are required (what
#: JSON Schema's `date-time` format asks), nothing looser: no numbers, no space for `T`.
_TIMESTAMP_PATTERN = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value  # from Python code; what travels as JSON is text
    if isinstance(value, str) and re.fullmatch(_TIMESTAMP_PATTERN, value):
        return value
    raise ValueError(
        "must be an RFC 3339 date-time with seconds and a timezone, e.g. 2026-11-25T09:30:00Z"
    )


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    Field(json_schema_extra={"pattern": _TIMESTAMP_PATTERN}),
]
"""An instant: RFC 3339 text with seconds and a timezone."""


def _printable(value: str) -> str:
    found = _UNPRINTABLE_RE.search(value)
    if found:
        raise ValueError(
            f"must not contain control characters (found {found.group()!a} at "
            f"position {found.start()})"
        )
    return value


def _printable_id(value: str) -> str:
    _printable(value)
    if not re.fullmatch(_ID_PATTERN, value):  # the schema's own pattern: the two never differ
        raise ValueError("must not begin or end with blanks")
    return value


Id = Annotated[
    StrictStr,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": _ID_PATTERN}),
    AfterValidator(_printable_id),
]
"""A portal, asset, request or command id: opaque text, no surrounding blanks, no control
characters."""

PortalId = Annotated[StrictStr, Field(pattern=PORTAL_ID_PATTERN)]
"""A tenant: 1-64 letters, digits, `-` and `_`. It starts the routing key of every result
(`<portal_id>.<event>`), so it holds no dots and no topic wildcards."""

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


#: What a source may start with: an absolute path, a `file:///` URL or an `http(s)://` URL.
SOURCE_PATTERN = r"^(/|file:///|https?://)"


def chosen_rule(
    match: MatchRule | None,
    max_distance: int | None,
    *,
    default_match: MatchRule,
    default_max_distance: int,
) -> tuple[MatchRule, int]:
    """The rule and pHash radius a request asks for: a radius without a rule means `phash`
    (the only rule a radius belongs to); what is absent comes from the defaults."""
    if match is None:
        match = "phash" if max_distance is not None else default_match
    return match, max_distance if max_distance is not None else default_max_distance


#: The same rule for JSON Schema: `match: "verified"` together with an integer `max_distance`.
_RADIUS_ONLY_WITH_PHASH: JsonDict = {
    "not": {
        "required": ["match", "max_distance"],
        "properties": {"match": {"const": "verified"}, "max_distance": {"type": "integer"}},
    }
}


def _radius_only_with_phash(match: MatchRule | None, max_distance: int | None) -> None:
    if match == "verified" and max_distance is not None:
        raise ValueError("max_distance belongs to the phash rule; verified takes none")


class Payload(BaseModel):
    """Common configuration of every inbound payload."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class AssetUploaded(Payload):
    """An asset was uploaded, or its metadata changed, or ops replay it for a backfill."""

    portal_id: PortalId
    """The tenant. Every read and write is scoped by it."""
    asset_id: Id
    """The portal's id of the asset, unique within the portal."""
    source: Annotated[StrictStr, Field(json_schema_extra={"pattern": SOURCE_PATTERN})]
    """Where to read the image bytes: an absolute path, a `file://` or an `http(s)://` URL."""
    title: Annotated[StrictStr, Field(max_length=4096)] = ""
    """Asset title, kept for display in duplicate sets and for text scopes."""
    description: Annotated[StrictStr, Field(max_length=65536)] = ""
    """Asset description, kept like the title."""
    tags: Annotated[list[Tag], Field(max_length=1000)] = []
    """Asset tags, matched exactly by `tags_all` / `tags_any` scopes."""
    uploaded_at: Timestamp
    """When the asset was uploaded (ISO-8601 with a timezone); breaks ties between originals."""

    @field_validator("source")
    @classmethod
    def _source_is_absolute(cls, value: str) -> str:
        if re.match(SOURCE_PATTERN, value):
            return value
        raise ValueError("source must be an absolute path, a file:/// URL or an http(s):// URL")


class AssetRemoved(Payload):
    """The portal deleted an asset by its own means: it leaves every later search."""

    portal_id: PortalId
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
    uploaded_from: Timestamp | None = None
    """Uploaded at or after this instant."""
    uploaded_to: Timestamp | None = None
    """Uploaded at or before this instant."""


class Sort(Payload):
    """How the asset bank is ordered; duplicate sets follow the same order."""

    field: Literal["uploaded_at", "title", "pixels"] = "uploaded_at"
    """Sort key: upload date, title (case-insensitive) or pixel count (width x height)."""
    order: Literal["desc", "asc"] = "desc"
    """Direction."""


class FindDuplicates(Payload):
    """A user opened the duplicate finder over a filter or search of the asset bank."""

    model_config = ConfigDict(json_schema_extra=_RADIUS_ONLY_WITH_PHASH)

    request_id: Id
    """Echoed in the answer, so the portal can match pages to the request."""
    portal_id: PortalId
    """The tenant."""
    scope: Scope = Scope()
    """The filter or search; empty = the whole portal."""
    sort: Sort = Sort()
    """The asset bank's current order."""
    match: MatchRule | None = None
    """The matching rule; absent = `phash` when `max_distance` is given, else the configured
    default (`verified` as shipped)."""
    max_distance: MaxDistance | None = None
    """`phash` rule only (refused with `verified`): largest Hamming distance to the original;
    absent = the configured default."""
    include_kept: StrictBool = False
    """Also answer with the sets a `keep-set` decision hides, flagged `kept: true` (for a
    reviewer who wants to see everything)."""

    @model_validator(mode="after")
    def _radius_with_its_rule(self) -> FindDuplicates:
        _radius_only_with_phash(self.match, self.max_distance)
        return self


class MakeOriginal(Payload):
    """A user clicked "Make original": this asset ranks first in any set it belongs to."""

    command_id: Id
    """Carried out once; a redelivery re-publishes the first outcome."""
    portal_id: PortalId
    """The tenant."""
    asset_id: Id
    """The asset to pin as original."""


class Merge(Payload):
    """What the original of a set keeps of the duplicates a `delete-duplicates` deletes."""

    tags: Literal["keep", "union"] = "keep"
    """`keep`: its own tags; `union`: its own, then every deleted asset's tags it lacks."""
    description: Literal["keep", "append"] = "keep"
    """`keep`: its own; `append`: its own, then each non-empty line of the deleted assets'
    descriptions it does not hold yet, in set order."""
    title: Literal["keep", "longest"] = "keep"
    """`keep`: its own; `longest`: the longest title of the set (its own on a tie)."""


class DeleteDuplicates(Payload):
    """A user deleted one duplicate (trash icon) or all duplicates of a set."""

    model_config = ConfigDict(json_schema_extra=_RADIUS_ONLY_WITH_PHASH)

    command_id: Id
    """Carried out once; a redelivery re-publishes the first outcome."""
    portal_id: PortalId
    """The tenant."""
    original_id: Id
    """The set's original, which is never deleted."""
    asset_ids: Annotated[list[Id], Field(min_length=1, max_length=10_000)]
    """The duplicates to delete."""
    match: MatchRule | None = None
    """Each asset must still match the original under this rule; absent = `phash` when
    `max_distance` is given, else the configured default. Send the rule the sets were found
    with."""
    max_distance: MaxDistance | None = None
    """`phash` rule only (refused with `verified`): each asset must still be this close to the
    original; absent = the configured default."""
    merge: Merge = Merge()
    """What the original keeps of the deleted assets' metadata; absent = nothing (its own
    metadata stays as it is). The merged metadata is in the answer's `original`."""

    @model_validator(mode="after")
    def _radius_with_its_rule(self) -> DeleteDuplicates:
        _radius_only_with_phash(self.match, self.max_distance)
        return self


#: Most asset ids one decision names; most decisions one command carries; most ids in all.
DECISION_IDS = 1000
DECISION_SETS = 1000
COMMAND_DECISION_IDS = 10_000

DecidedIds = Annotated[
    list[Id],
    Field(min_length=2, max_length=DECISION_IDS, json_schema_extra={"uniqueItems": True}),
    AfterValidator(lambda ids: _unique(ids)),
]
"""The assets one decision is about: 2 to 1 000 different ids."""


def _unique(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    for n, asset_id in enumerate(ids):
        if asset_id in seen:
            raise ValueError(f"asset id {asset_id!r} is repeated (at position {n})")
        seen.add(asset_id)
    return ids


class _Decision(Payload):
    """A review decision over one set of assets (`asset_ids`) or over many (`sets`)."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["asset_ids"]}, {"required": ["sets"]}]}
    )

    command_id: Id
    """Carried out once; a redelivery re-publishes the first outcome."""
    portal_id: PortalId
    """The tenant."""
    # Exactly one of the two: absent, never null, in the model and its JSON Schema alike.
    asset_ids: DecidedIds | SkipJsonSchema[None] = None
    """One decision: the assets it is about (2-1 000 different ids). Give this or `sets`."""
    sets: (
        Annotated[list[DecidedIds], Field(min_length=1, max_length=DECISION_SETS)]
        | SkipJsonSchema[None]
    ) = None
    """Bulk review: up to 1 000 decisions of 2-1 000 ids each, at most 10 000 ids in all,
    each recorded as if sent alone. Give this or `asset_ids`."""

    @model_validator(mode="before")
    @classmethod
    def _one_of_ids_or_sets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [name for name in ("asset_ids", "sets") if name in data]
            if len(given) != 1:
                raise ValueError("give exactly one of asset_ids and sets")
            if data[given[0]] is None:
                raise ValueError(f"{given[0]} may be absent but not null")
        return data

    @model_validator(mode="after")
    def _bounded(self) -> _Decision:
        total = sum(map(len, self.decided_sets()))
        if total > COMMAND_DECISION_IDS:
            raise ValueError(
                f"sets name {total} asset ids; one command names at most {COMMAND_DECISION_IDS}"
            )
        return self

    def decided_sets(self) -> list[list[str]]:
        """The decisions this command carries, one list of ids each."""
        return [list(self.asset_ids)] if self.asset_ids is not None else list(self.sets or [])


class MarkDistinct(_Decision):
    """A user clicked "Not duplicates": no two of these assets are put in one set again."""


class KeepSet(_Decision):
    """A user clicked "Keep all": a set whose members are all among these is left out of
    later answers, until a new asset joins it."""


class ForgetDecisions(Payload):
    """A user changed their mind: every decision that names any of these assets is removed."""

    command_id: Id
    """Carried out once; a redelivery re-publishes the first outcome."""
    portal_id: PortalId
    """The tenant."""
    asset_ids: Annotated[list[Id], Field(min_length=1, max_length=COMMAND_DECISION_IDS)]
    """The assets whose decisions go (1-10 000 ids)."""
