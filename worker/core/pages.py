"""Turning grouped candidates into `duplicates.found` pages: pure assembly, no I/O.

Pages are bounded twice: by sets (`DUPFINDER_PAGE_SIZE`) and by encoded bytes (`MAX_PAGE_BYTES`),
because long descriptions and many tags can make a few hundred sets larger than RabbitMQ's
frames and a portal's parser like. A set that does not fit on an empty page continues on the
next pages under the same `set_id`, its original first; no other set is ever split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from schemas.events import DuplicateSet, DuplicatesFound, MatchKind, OriginalReason, SetMember
from schemas.messages import MatchRule, Sort
from worker.core.grouping import Candidates, Group, arrange, sort_rank


def bank_order(candidates: Candidates, groups: list[Group], sort: Sort) -> list[Group]:
    """Sets and members in the asset bank's order (see `grouping.arrange`)."""
    values: Sequence[Any]
    if sort.field == "uploaded_at":
        values = candidates.uploaded_at_us.tolist()
    elif sort.field == "pixels":
        values = candidates.pixels.tolist()
    else:
        values = [title.casefold() for title in candidates.titles]
    rank = sort_rank(values, candidates.asset_ids, descending=sort.order == "desc")
    return arrange(groups, rank)


#: Largest encoded `duplicates.found` body, sets and envelope fields together.
MAX_PAGE_BYTES = 4 * 1024 * 1024
#: What a page spends besides its sets (ids, counts, rule), and a set besides its members: a
#: generous bound, as the ids are at most 256 characters.
PAGE_OVERHEAD_BYTES = 2048
SET_OVERHEAD_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Part:
    """Members `start` to `stop` (positions in the set) of the set `group` of an answer."""

    group: int
    start: int
    stop: int


def encoded(event: Any) -> bytes:
    """An event's body as it is published: compact JSON, ASCII (so bytes = characters)."""
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()


def member_sizes(
    group: Group, asset_ids: Sequence[str], docs: Mapping[str, Mapping[str, Any]]
) -> list[int]:
    """Encoded bytes of each member of a set (0 for a member whose document vanished)."""
    members = {m.asset_id: m for m in _members(group, asset_ids, docs)}
    return [
        len(encoded(members[asset_ids[i]])) + 1 if asset_ids[i] in members else 0
        for i in group.members.tolist()
    ]


def layout(
    sizes: Sequence[Sequence[int]], *, max_sets: int, max_bytes: int = MAX_PAGE_BYTES
) -> list[list[Part]]:
    """Pages of an answer, in set order, from each set's member sizes (`member_sizes`).

    A page holds at most `max_sets` sets and `max_bytes` bytes. A set that fits on an empty page
    is never split; a larger one takes pages of its own, as many as it needs (a single member
    larger than a page, which the payload limits rule out, would go alone). An empty answer is
    one page with no sets.
    """
    room = max_bytes - PAGE_OVERHEAD_BYTES
    pages: list[list[Part]] = []
    current: list[Part] = []
    used = 0
    for group, members in enumerate(sizes):
        whole = SET_OVERHEAD_BYTES + sum(members)
        if current and (len(current) >= max_sets or used + whole > room):
            pages.append(current)
            current, used = [], 0
        if whole <= room:
            current.append(Part(group, 0, len(members)))
            used += whole
            continue
        start = 0
        while start < len(members):
            stop, filled = start + 1, SET_OVERHEAD_BYTES + members[start]
            while stop < len(members) and filled + members[stop] <= room:
                filled += members[stop]
                stop += 1
            pages.append([Part(group, start, stop)])
            start = stop
    if current or not pages:
        pages.append(current)
    return pages


def member_ids(
    groups: Sequence[Group], asset_ids: Sequence[str], parts: Sequence[Part] | None = None
) -> list[str]:
    """The asset ids a slice of sets (or the parts of a page) needs displayed."""
    if parts is None:
        return [asset_ids[i] for group in groups for i in group.members]
    return [
        asset_ids[i]
        for part in parts
        for i in groups[part.group].members[part.start : part.stop].tolist()
    ]


def build_page(
    *,
    request_id: str,
    portal_id: str,
    match: MatchRule,
    max_distance: int | None,
    groups: Sequence[Group],
    asset_ids: Sequence[str],
    docs: Mapping[str, Mapping[str, Any]],
    total_sets: int,
    page: int,
    pages: int,
    parts: Sequence[Part] | None = None,
) -> DuplicatesFound:
    """One page: the `parts` of `groups` (every group whole when None). Members whose documents
    vanished meanwhile (deleted) are left out, and so is a set left with fewer than two members
    or without its original; a continued set's later parts need only one member."""
    sets = []
    chosen = (
        parts if parts is not None else [Part(n, 0, len(g.members)) for n, g in enumerate(groups)]
    )
    for part in chosen:
        group = groups[part.group]
        members = _members(group, asset_ids, docs, part.start, part.stop)
        if part.start == 0:
            whole = part.stop >= len(group.members)
            keep = len(members) >= (2 if whole else 1) and members[0].original
        else:
            keep = bool(members)
        if keep:
            set_id = asset_ids[int(group.members[0])]
            sets.append(
                DuplicateSet(
                    set_id=set_id, assets=members, kept=group.kept, reopened=group.reopened
                )
            )
    return DuplicatesFound(
        request_id=request_id,
        portal_id=portal_id,
        match=match,
        max_distance=max_distance,
        total_sets=total_sets,
        page=page,
        pages=pages,
        sets=sets,
    )


def _kind(group: Group, position: int, distance: int, same_bytes: bool) -> MatchKind:
    """How a member matches: named by the verified matcher, or (under `phash`) `identical` for
    the original's very bytes, else read off the pHash distance."""
    if position == 0:
        return "original"
    named = group.kind(position)
    if named is not None:
        return cast(MatchKind, named)
    if same_bytes:
        return "identical"
    return "same_phash" if distance == 0 else "near"


def _members(
    group: Group,
    asset_ids: Sequence[str],
    docs: Mapping[str, Mapping[str, Any]],
    start: int = 0,
    stop: int | None = None,
) -> list[SetMember]:
    members = []
    original = docs.get(asset_ids[int(group.members[0])]) or {}
    pairs = zip(group.members.tolist(), group.distances.tolist(), strict=True)
    for n, (position, distance) in enumerate(pairs):
        if n < start or (stop is not None and n >= stop):
            continue
        doc = docs.get(asset_ids[position])
        if doc is None:
            continue
        uploaded_at: datetime = doc["uploaded_at"]
        members.append(
            SetMember(
                asset_id=doc["asset_id"],
                title=doc.get("title", ""),
                description=doc.get("description", ""),
                tags=list(doc.get("tags", [])),
                width=doc["width"],
                height=doc["height"],
                uploaded_at=uploaded_at.astimezone(UTC),
                phash=doc["phash"],
                distance=int(distance),
                original=n == 0,
                match=_kind(group, n, distance, _same_bytes(doc, original)),
                similarity=None if group.similarity is None else round(group.similarity[n], 4),
                original_reason=cast(OriginalReason, group.reason) if n == 0 else None,
                new=bool(group.new[n]) if group.new is not None else False,
            )
        )
    return members


def _same_bytes(doc: Mapping[str, Any], original: Mapping[str, Any]) -> bool:
    checksum = doc.get("sha256")
    return checksum is not None and checksum == original.get("sha256")
