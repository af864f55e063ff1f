"""What an original keeps of the duplicates deleted into it: a pure function over metadata.

Users will not deduplicate until the keeper inherits what made the copies worth having (their
tags, their captions), so `delete-duplicates` can merge them per field. The result stays inside
the limits of an `asset-uploaded` payload, so the portal can apply it and publish it back
unchanged: lines and tags that would overflow them are left out, never cut in half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.messages import AssetUploaded, Merge


def _limit(field: str) -> int:
    for rule in AssetUploaded.model_fields[field].metadata:
        if hasattr(rule, "max_length") and rule.max_length is not None:
            return int(rule.max_length)
    raise LookupError(f"AssetUploaded.{field} has no max_length")


#: The payload's own limits (`AssetUploaded`), read from the model so the two never differ.
MAX_DESCRIPTION = _limit("description")
MAX_TAGS = _limit("tags")


@dataclass(frozen=True, slots=True)
class Metadata:
    """The fields a merge reads and writes."""

    title: str
    description: str
    tags: tuple[str, ...]


def merged(original: Metadata, deleted: Sequence[Metadata], policy: Merge) -> Metadata:
    """The original's metadata after the `deleted` assets (in set order) merge into it."""
    title = original.title
    if policy.title == "longest":
        for other in deleted:
            if len(other.title) > len(title):  # strictly longer: the original wins a tie
                title = other.title
    tags = list(original.tags)
    if policy.tags == "union":
        have = set(tags)
        for other in deleted:
            for tag in other.tags:
                if tag not in have and len(tags) < MAX_TAGS:
                    have.add(tag)
                    tags.append(tag)
    description = original.description
    if policy.description == "append":
        description = _appended(description, [d.description for d in deleted])
    return Metadata(title=title, description=description, tags=tuple(tags))


def _appended(description: str, others: Sequence[str]) -> str:
    """`description`, then each non-empty line of `others` it does not hold yet."""
    have = {line.strip() for line in description.splitlines() if line.strip()}
    lines = [description] if description else []
    size = len(description)
    for text in others:
        for line in text.splitlines():
            line = line.strip()
            if not line or line in have:
                continue
            cost = len(line) + (1 if lines else 0)
            if size + cost > MAX_DESCRIPTION:
                continue
            have.add(line)
            lines.append(line)
            size += cost
    return "\n".join(lines)
