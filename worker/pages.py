"""Turning grouped candidates into `duplicates.found` pages: pure assembly, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from schemas.events import DuplicateSet, DuplicatesFound, MatchKind, SetMember
from schemas.messages import MatchRule, Sort
from worker.grouping import Candidates, Group, arrange, sort_rank


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


def page_count(total_sets: int, page_size: int) -> int:
    """Pages of an answer; an empty answer is one page with no sets."""
    return max(1, -(-total_sets // page_size))


def member_ids(groups: Sequence[Group], asset_ids: Sequence[str]) -> list[str]:
    """The asset ids a slice of sets needs displayed."""
    return [asset_ids[i] for group in groups for i in group.members]


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
) -> DuplicatesFound:
    """One page. Members whose documents vanished meanwhile (deleted) are left out, and so is a
    set left with fewer than two members."""
    sets = []
    for group in groups:
        members = _members(group, asset_ids, docs)
        if len(members) >= 2 and members[0].original:
            sets.append(DuplicateSet(set_id=members[0].asset_id, assets=members))
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


def _kind(group: Group, position: int, distance: int) -> MatchKind:
    """How a member matches: named by the verified matcher, or read off the pHash distance."""
    if position == 0:
        return "original"
    named = group.kind(position)
    if named is not None:
        return cast(MatchKind, named)
    return "same_phash" if distance == 0 else "near"


def _members(
    group: Group, asset_ids: Sequence[str], docs: Mapping[str, Mapping[str, Any]]
) -> list[SetMember]:
    members = []
    for n, (position, distance) in enumerate(
        zip(group.members.tolist(), group.distances.tolist(), strict=True)
    ):
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
                match=_kind(group, n, distance),
                similarity=None if group.similarity is None else round(group.similarity[n], 4),
            )
        )
    return members
