"""Which duplicates a `delete-duplicates` command may delete: a pure decision over asset facts.

Delete never deletes an original. An asset is refused when it is the named original, or when it
is a duplicate of that original but outranks it in original order: it would then be the original
of the set holding both (a stale screen after someone pinned it), and deleting it would delete an
original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from schemas.events import RejectionReason
from worker.core.grouping import original_key


@dataclass(frozen=True, slots=True)
class AssetFacts:
    """What the decision needs to know about one live asset."""

    asset_id: str
    pixels: int
    uploaded_at_us: int
    pinned_at_us: int

    @property
    def key(self) -> tuple[int, int, int, str]:
        """Its place in original order."""
        return original_key(self.pinned_at_us, self.pixels, self.uploaded_at_us, self.asset_id)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a delete request before it is carried out."""

    delete: list[str]
    """Live assets to tombstone now."""
    already_deleted: list[str]
    """Assets deleted earlier: reported as deleted, nothing to do."""
    rejected: list[tuple[str, RejectionReason]]
    """(asset_id, reason) pairs left alone."""


def decide(
    original: AssetFacts,
    requested: Sequence[str],
    live: Mapping[str, AssetFacts],
    deleted: frozenset[str],
    duplicates: Set[str],
    apart: Set[str] = frozenset(),
) -> Decision:
    """Sort each requested asset into delete, already deleted or rejected (with its reason).

    `live` holds the facts of the requested assets that exist, are hashed and are not deleted;
    `deleted` the ids already tombstoned in this portal. Anything else is unknown to the portal.
    `apart` are the assets a distinct decision keeps apart from the original: a user said they
    are no copies of it, so they are not deleted as copies. Duplicated ids in `requested` are
    decided once.
    """
    delete: list[str] = []
    already: list[str] = []
    rejected: list[tuple[str, RejectionReason]] = []
    for asset_id in dict.fromkeys(requested):
        facts = live.get(asset_id)
        if asset_id == original.asset_id:
            rejected.append((asset_id, "is_original"))
        elif asset_id in deleted:
            already.append(asset_id)
        elif facts is None:
            rejected.append((asset_id, "not_found"))
        elif asset_id in apart:
            rejected.append((asset_id, "distinct"))
        elif asset_id not in duplicates:
            rejected.append((asset_id, "not_a_duplicate"))
        elif facts.key < original.key:
            rejected.append((asset_id, "is_original"))
        else:
            delete.append(asset_id)
    return Decision(delete, already, rejected)
