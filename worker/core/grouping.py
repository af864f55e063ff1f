"""Forming duplicate sets from hashes: the pure core of `find-duplicates`.

The rule is the product's: take the assets in original order; each asset not yet in a set becomes
an original and gathers every remaining asset within `max_distance` of it. Sets therefore form
around originals and never chain: every member is within the radius of its own original, so
"delete all duplicates" of a set is never refused for distance. With radius 0 this is simply
"equal hashes".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from worker.core.matching import KINDS, Fingerprints, Pairs, candidate_pairs, confirmed_pairs
from worker.core.neighbours import pairs_within

IntArray = NDArray[np.int64]


Near = tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]
"""Pairs (first, second, distance) of positions within the phash rule's radius."""


class Apart(Protocol):
    """Which assets a user said are no copies of one another (see `decisions.Decided`)."""

    def apart(self, first: NDArray[np.intp], second: NDArray[np.intp]) -> NDArray[np.bool_]:
        """For each pair (first[k], second[k]): are the two kept apart?"""
        ...

    def named(self, positions: NDArray[np.intp]) -> NDArray[np.bool_]:
        """For each position: is it kept apart from anything at all?"""
        ...


@dataclass(frozen=True, slots=True)
class Candidates:
    """The in-scope assets of a search, as columns for the grouping core."""

    asset_ids: list[str]
    phashes: NDArray[np.uint64]
    pixels: NDArray[np.int64]
    uploaded_at_us: NDArray[np.int64]
    pinned_at_us: NDArray[np.int64]
    titles: list[str]
    """Empty unless the search sorts by title."""
    prints: Fingerprints | None = None
    """What the verified matcher reads; loaded only for `verified` searches."""


@dataclass(frozen=True, slots=True)
class Group:
    """One duplicate set, as positions into the caller's arrays."""

    members: NDArray[np.intp]
    """The original first, then the others in original order."""
    distances: NDArray[np.int64]
    """Hamming distance of each member to the original (0 for the original)."""
    kinds: NDArray[np.int8] | None = None
    """Verified matching only: how each member matches the original (codes into
    `matching.KINDS`, 0 = the original itself)."""
    similarity: NDArray[np.float64] | None = None
    """Verified matching only: signature similarity of each member to the original."""
    reason: str | None = None
    """Why the original leads (`original_reason`), once known."""
    kept: bool = False
    """A keep decision holds every member (see `decisions.review`)."""
    reopened: bool = False
    """A keep decision holds some members and others joined them since."""
    new: NDArray[np.bool_] | None = None
    """A reopened set only: which members the keep decision does not hold."""

    def kind(self, position: int) -> str | None:
        """The published name of how the member at `position` matches (None under `phash`)."""
        return None if self.kinds is None else KINDS[int(self.kinds[position])]

    def taken(self, index: NDArray[np.intp]) -> Group:
        """The same set with its members (and everything said per member) in `index` order."""

        def pick(column: Any) -> Any:
            return None if column is None else column[index]

        return replace(
            self,
            members=self.members[index],
            distances=self.distances[index],
            kinds=pick(self.kinds),
            similarity=pick(self.similarity),
            new=pick(self.new),
        )


def original_key(
    pinned_at_us: int, pixels: int, uploaded_at_us: int, asset_id: str
) -> tuple[int, int, int, str]:
    """Sort key of one asset in original order (smaller = more original).

    Pinned assets first, the latest pin first (0 = not pinned); then the most pixels; then the
    earliest upload; then the smallest asset id, so the order is total and repeatable.
    """
    return (-pinned_at_us, -pixels, uploaded_at_us, asset_id)


#: The rules of original order, in `original_key`'s order, as the events name them.
ORIGINAL_RULES = ("pinned", "most_pixels", "earliest_upload", "smallest_id")


def original_reason(
    original: tuple[int, int, int, str], runner_up: tuple[int, int, int, str]
) -> str:
    """The first rule of original order (see `original_key`) that puts `original` before
    `runner_up`, so a portal can say "kept because it has the most pixels"."""
    for rule, mine, theirs in zip(ORIGINAL_RULES, original, runner_up, strict=True):
        if mine != theirs:
            return rule
    raise ValueError("an asset is not its own runner-up")


def with_reasons(candidates: Candidates, groups: list[Group]) -> list[Group]:
    """Each set with the reason its original leads. The groups must be in original order
    inside (as `find_sets` forms them), so the runner-up is the second member."""

    def key(position: int) -> tuple[int, int, int, str]:
        return original_key(
            int(candidates.pinned_at_us[position]),
            int(candidates.pixels[position]),
            int(candidates.uploaded_at_us[position]),
            candidates.asset_ids[position],
        )

    return [
        replace(g, reason=original_reason(key(int(g.members[0])), key(int(g.members[1]))))
        for g in groups
    ]


def original_order(
    pinned_at_us: IntArray,
    pixels: IntArray,
    uploaded_at_us: IntArray,
    asset_ids: Sequence[str],
) -> NDArray[np.intp]:
    """Positions sorted by `original_key`, vectorised for large scopes."""
    id_rank = np.argsort(np.argsort(np.asarray(asset_ids, dtype=object), kind="stable"))
    # lexsort's last key is the primary one.
    return np.lexsort((id_rank, uploaded_at_us, -pixels, -pinned_at_us)).astype(np.intp)


def hamming(a: NDArray[np.uint64], b: np.uint64 | NDArray[np.uint64]) -> NDArray[np.int64]:
    """Bitwise Hamming distance between 64-bit hashes."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def find_sets(
    candidates: Candidates,
    order: NDArray[np.intp],
    rule: str,
    max_distance: int,
    *,
    threads: int = 1,
    pairs: Pairs | None = None,
    near: Near | None = None,
    apart: Apart | None = None,
) -> list[Group]:
    """Duplicate sets under a matching rule: `phash` within `max_distance`, or `verified`.
    Either rule's pairs may have been found already: the verified rule's candidate `pairs`
    (`matching.candidate_pairs`), the phash rule's `near` pairs (`near_pairs`). Assets that
    `apart` keeps apart are no match under either rule, and never share a set."""
    if rule == "verified":
        return form_verified_sets(
            _prints(candidates), order, threads=threads, pairs=pairs, apart=apart
        )
    return form_sets(
        candidates.phashes, order, max_distance, threads=threads, near=near, apart=apart
    )


def without_apart(
    apart: Apart | None, first: NDArray[np.intp], *columns: NDArray[Any]
) -> tuple[NDArray[Any], ...]:
    """Pair columns (`first`, `second`, then any per-pair values) without the pairs `apart`
    keeps apart; unchanged when there is nothing to keep apart."""
    if apart is None:
        return (first, *columns)
    close = ~apart.apart(first, columns[0])
    return tuple(column[close] for column in (first, *columns))


def near_pairs(hashes: NDArray[np.uint64], max_distance: int, threads: int = 1) -> Near:
    """Every pair within `max_distance` bits, with its distance (what the phash rule forms
    sets from)."""
    return pairs_within(hashes, max_distance, threads=threads)


def matches_of(candidates: Candidates, index: int, rule: str, max_distance: int) -> set[int]:
    """Positions that match the asset at `index` under a rule (what a delete re-checks)."""
    if rule == "verified":
        found = confirmed_pairs(_prints(candidates))
        return {
            int(b if a == index else a)
            for a, b in zip(found.first.tolist(), found.second.tolist(), strict=True)
            if index in (a, b)
        }
    close = hamming(candidates.phashes, candidates.phashes[index]) <= max_distance
    return set(np.flatnonzero(close).tolist()) - {index}


def _prints(candidates: Candidates) -> Fingerprints:
    if candidates.prints is None:
        raise ValueError("the verified rule needs the candidates' fingerprints")
    return candidates.prints


def form_sets(
    hashes: NDArray[np.uint64],
    order: NDArray[np.intp],
    max_distance: int,
    *,
    threads: int = 1,
    near: Near | None = None,
    apart: Apart | None = None,
) -> list[Group]:
    """Duplicate sets of at least two members, each formed around its original.

    `order` is the original order (see `original_order`). Sets come out in the order of their
    originals. `near` are the pairs within `max_distance` when found already; pairs `apart`
    keeps apart never match.
    """
    if max_distance == 0 and apart is None and near is None:
        return _equal_hash_sets(hashes, order)
    # Equal hashes are pairs within radius 0, so a decision can split them like any others.
    first, second, distance = (
        near if near is not None else near_pairs(hashes, max_distance, threads)
    )
    first, second, distance = without_apart(apart, first, second, distance)
    return _greedy_sets(len(hashes), order, first, second, distance, None, None, apart)


def _equal_hash_sets(hashes: NDArray[np.uint64], order: NDArray[np.intp]) -> list[Group]:
    # Equality is transitive, so greedy formation reduces to grouping equal values; sorting by
    # (hash, rank) puts each group's original first. O(n log n).
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    by_hash = np.lexsort((rank, hashes))
    sorted_hashes = hashes[by_hash]
    starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
    ends = np.r_[starts[1:], len(by_hash)]
    groups = [
        Group(by_hash[s:e].astype(np.intp), np.zeros(e - s, dtype=np.int64))
        for s, e in zip(starts, ends, strict=True)
        if e - s >= 2
    ]
    groups.sort(key=lambda g: rank[g.members[0]])
    return groups


def form_verified_sets(
    prints: Fingerprints,
    order: NDArray[np.intp],
    *,
    threads: int = 1,
    pairs: Pairs | None = None,
    apart: Apart | None = None,
) -> list[Group]:
    """Duplicate sets under the verified matcher (see `matching`), formed like `form_sets`.

    Every member is a confirmed match of its own original; members carry the kind of match and
    the similarity. Pairs `apart` keeps apart are not even confirmed.
    """
    if apart is not None:
        first, second = candidate_pairs(prints, threads=threads) if pairs is None else pairs
        pairs = without_apart(apart, first, second)  # type: ignore[assignment]
    found = confirmed_pairs(prints, threads=threads, pairs=pairs)
    return _greedy_sets(
        len(prints.phashes),
        order,
        found.first,
        found.second,
        found.distance,
        found.kind,
        found.similarity,
        apart,
    )


def _greedy_sets(
    n: int,
    order: NDArray[np.intp],
    first: NDArray[np.intp],
    second: NDArray[np.intp],
    distance: NDArray[np.int64],
    kind: NDArray[np.int8] | None,
    similarity: NDArray[np.float64] | None,
    apart: Apart | None = None,
) -> list[Group]:
    """The product's rule over a sparse graph of accepted pairs: in original order, each asset
    not yet taken becomes an original and takes its untaken neighbours; of neighbours kept
    apart from one another, only the first in original order (the others stay free to lead or
    join a later set)."""
    if first.size == 0:
        return []
    source = np.concatenate((first, second))
    target = np.concatenate((second, first))
    by_source = np.argsort(source, kind="stable")
    target = target[by_source]
    edge = np.concatenate((np.arange(len(first)), np.arange(len(first))))[by_source]
    starts = np.searchsorted(source[by_source], np.arange(n + 1))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    assigned = np.zeros(n, dtype=bool)
    has_neighbour = starts[1:] > starts[:-1]
    groups: list[Group] = []
    for original in order[has_neighbour[order]]:
        if assigned[original]:
            continue
        assigned[original] = True
        neighbours = target[starts[original] : starts[original + 1]]
        free = ~assigned[neighbours]
        if not free.any():
            continue
        members = neighbours[free]
        edges = edge[starts[original] : starts[original + 1]][free]
        by_rank = np.argsort(rank[members], kind="stable")
        members, edges = members[by_rank], edges[by_rank]
        if apart is not None:
            taken = _not_apart(members, apart)
            members, edges = members[taken], edges[taken]
        assigned[members] = True
        groups.append(
            Group(
                np.r_[original, members].astype(np.intp),
                np.r_[0, distance[edges]].astype(np.int64),
                None if kind is None else np.r_[0, kind[edges]].astype(np.int8),
                None if similarity is None else np.r_[1.0, similarity[edges]],
            )
        )
    return groups


def _not_apart(members: NDArray[np.intp], apart: Apart) -> NDArray[np.bool_]:
    """Which of a set's would-be members (in original order) it takes: each one not kept apart
    from a member taken before it. Only members named by a distinct decision are compared."""
    taken = np.ones(len(members), dtype=bool)
    named = np.flatnonzero(apart.named(members))
    if len(named) < 2:
        return taken
    i, j = np.triu_indices(len(named), k=1)
    split = apart.apart(members[named[i]], members[named[j]])
    for a, b in zip(named[i[split]].tolist(), named[j[split]].tolist(), strict=True):
        if taken[a]:  # pairs come by their first member, in order: a decides before b
            taken[b] = False
    return taken


def sort_rank(
    values: Sequence[Any], asset_ids: Sequence[str], *, descending: bool
) -> NDArray[np.intp]:
    """Rank of each position under the asset bank's sort (0 = first); ties by ascending id."""
    by_id = sorted(range(len(values)), key=asset_ids.__getitem__)
    positions = sorted(by_id, key=values.__getitem__, reverse=descending)  # stable in both ways
    rank = np.empty(len(values), dtype=np.intp)
    rank[np.asarray(positions, dtype=np.intp)] = np.arange(len(values))
    return rank


def arrange(groups: list[Group], rank: NDArray[np.intp]) -> list[Group]:
    """Order sets and their members the way the asset bank is ordered.

    Sets by their best-ranked member; inside a set the original stays first and the others follow
    the bank's order.
    """
    arranged = []
    for group in groups:
        rest = np.argsort(rank[group.members[1:]], kind="stable") + 1
        arranged.append(group.taken(np.r_[0, rest].astype(np.intp)))
    arranged.sort(key=lambda g: int(rank[g.members].min()))
    return arranged
