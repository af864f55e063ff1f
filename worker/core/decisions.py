"""Review decisions applied to a search: the pure core of "not duplicates" and "keep all".

A decision names assets of one portal: `distinct` (no two of them are one another's match) or
`kept` (a set whose members are all among them is left out of answers). A search turns the
decisions that name at least two of its candidates into memberships, (position, decision)
pairs, and asks two questions of them with array operations, so 100 000 decisions cost a few
sorts rather than a loop per set:

- `Decided.apart`: which candidate pairs a distinct decision keeps apart. Such a pair is not a
  match, and two members kept apart never join one original's set (the later one in original
  order stays free), so a member kept out of one set may still lead or join another, and no
  rule, replay or rehash brings the pair back together (see `grouping`);
- `review`: which formed sets a keep decision holds whole (hidden, or flagged `kept`), and which
  it holds only in part, because new assets joined since (`reopened`, new members flagged).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.core.grouping import Group

DISTINCT, KEPT = "distinct", "kept"
KINDS = (DISTINCT, KEPT)


@dataclass(frozen=True, slots=True)
class Memberships:
    """Which decisions each candidate belongs to, sorted by position then decision."""

    positions: NDArray[np.int64]
    decisions: NDArray[np.int64]
    count: int
    """How many decisions there are (decision numbers run from 0 to count - 1)."""

    @classmethod
    def none(cls) -> Memberships:
        """No memberships at all."""
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), 0)

    def keys(self) -> NDArray[np.int64]:
        """One sortable number per membership (the arrays are sorted by it already)."""
        return self.positions * max(self.count, 1) + self.decisions

    def of_rows(self, positions: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Every (row, decision) such that candidate `positions[row]` belongs to the decision."""
        starts = np.searchsorted(self.positions, positions, side="left")
        stops = np.searchsorted(self.positions, positions, side="right")
        sizes = stops - starts
        rows = np.repeat(np.arange(len(positions), dtype=np.int64), sizes)
        # The k-th membership of a row sits at starts[row] + k.
        offsets = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(sizes) - sizes, sizes
        )
        return rows, self.decisions[np.repeat(starts, sizes) + offsets]

    def holds(
        self, positions: NDArray[np.int64], decisions: NDArray[np.int64]
    ) -> NDArray[np.bool_]:
        """Whether candidate `positions[k]` belongs to decision `decisions[k]`, for every k."""
        return _contains(self.keys(), positions * max(self.count, 1) + decisions)


@dataclass(frozen=True, slots=True)
class Decided:
    """A portal's decisions over one search's candidates."""

    distinct: Memberships
    kept: Memberships

    @property
    def empty(self) -> bool:
        """No decision names two candidates: the search runs as if there were none."""
        return self.distinct.count == 0 and self.kept.count == 0

    def named(self, positions: NDArray[np.intp]) -> NDArray[np.bool_]:
        """For each candidate position: does a distinct decision name it?"""
        return _contains(self.distinct.positions, positions)

    def apart(self, first: NDArray[np.intp], second: NDArray[np.intp]) -> NDArray[np.bool_]:
        """For each pair (first[k], second[k]): does one distinct decision hold both?"""
        result = np.zeros(len(first), dtype=bool)
        if self.distinct.count == 0 or len(first) == 0:
            return result
        member = np.zeros(int(max(first.max(), second.max())) + 1, dtype=bool)
        named = self.distinct.positions[self.distinct.positions < len(member)]
        member[named] = True
        both = np.flatnonzero(member[first] & member[second])
        rows, decisions = self.distinct.of_rows(first[both].astype(np.int64))
        shared = self.distinct.holds(second[both][rows].astype(np.int64), decisions)
        result[both[rows[shared]]] = True
        return result


def _contains(ordered: NDArray[np.int64], values: NDArray[Any]) -> NDArray[np.bool_]:
    """For each of `values`: is it in the sorted array `ordered`?"""
    if len(ordered) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return np.asarray(ordered[at] == values)


def decided(
    asset_ids: Sequence[str],
    decisions: Iterable[tuple[str, Sequence[str]]],
    among: NDArray[np.intp] | None = None,
) -> Decided:
    """The (kind, asset ids) decisions as memberships of the candidates `asset_ids`; a decision
    that names fewer than two candidates cannot change the answer and is left out.

    `among`, when given, are the only positions any question will ask about (those of the
    search's pairs): placing decisions on them alone spares looking up every candidate.
    """
    found = list(decisions)
    named = [a for _, ids in found for a in ids]
    if not named or not asset_ids or (among is not None and len(among) == 0):
        return NONE
    if among is None:
        where = positions_of(asset_ids, named)
    else:
        local = positions_of([asset_ids[i] for i in among.tolist()], named)
        where = np.where(local >= 0, among[np.maximum(local, 0)], -1).astype(np.int64)
    which = np.repeat(
        np.arange(len(found), dtype=np.int64),
        np.fromiter((len(ids) for _, ids in found), dtype=np.int64, count=len(found)),
    )
    distinct = np.fromiter((kind == DISTINCT for kind, _ in found), dtype=bool, count=len(found))
    width = len(asset_ids)
    return Decided(
        _memberships(where, which, distinct[which], width),
        _memberships(where, which, ~distinct[which], width),
    )


def positions_of(asset_ids: Sequence[str], named: Sequence[str]) -> NDArray[np.int64]:
    """The position of each of `named` among the (distinct) `asset_ids`, -1 where absent.

    The dict is built over the smaller side and the other side is looked up in it in one
    C-level pass (`map`): on every search's path, this is most of what decisions cost.
    """
    if len(asset_ids) <= len(named):
        index = {a: n for n, a in enumerate(asset_ids)}
        return np.fromiter(map(index.get, named, repeat(-1)), dtype=np.int64, count=len(named))
    unique = {a: k for k, a in enumerate(dict.fromkeys(named))}
    found = np.fromiter(
        map(unique.get, asset_ids, repeat(-1)), dtype=np.int64, count=len(asset_ids)
    )
    at = np.full(len(unique), -1, dtype=np.int64)
    hits = np.flatnonzero(found >= 0)
    at[found[hits]] = hits
    return at[np.fromiter(map(unique.__getitem__, named), dtype=np.int64, count=len(named))]


def _memberships(
    where: NDArray[np.int64], which: NDArray[np.int64], chosen: NDArray[np.bool_], width: int
) -> Memberships:
    """Memberships of the chosen rows' candidates, for decisions naming at least two of them,
    renumbered from 0."""
    keep = chosen & (where >= 0)
    keys = np.unique(which[keep] * width + where[keep])  # by decision, then position
    decision, positions = keys // width, keys % width
    numbers, counts = np.unique(decision, return_counts=True)
    enough = numbers[counts >= 2]
    rows = np.isin(decision, enough)
    renumbered = np.searchsorted(enough, decision[rows])
    positions = positions[rows]
    by_position = np.lexsort((renumbered, positions))
    return Memberships(positions[by_position], renumbered[by_position], len(enough))


def review(groups: list[Group], decided: Decided, *, include_kept: bool) -> list[Group]:
    """The sets an answer shows, with what keep decisions say of them.

    For each set, the keep decision holding most of its members (at least two) decides: if it
    holds them all, the set is kept (left out, or flagged with `include_kept`); if not, new
    assets joined it since, and it is reopened with the others flagged new.
    """
    kept = decided.kept
    if kept.count == 0 or not groups:
        return groups
    sizes = np.array([len(g.members) for g in groups], dtype=np.int64)
    members = np.concatenate([g.members for g in groups]).astype(np.int64)
    set_of = np.repeat(np.arange(len(groups), dtype=np.int64), sizes)
    rows, decisions = kept.of_rows(members)
    if len(rows) == 0:
        return groups
    # How many members of each set every decision holds; the largest count per set wins.
    pair = set_of[rows] * kept.count + decisions
    pairs, counts = np.unique(pair, return_counts=True)
    pair_set, pair_decision = pairs // kept.count, pairs % kept.count
    best = np.lexsort((-counts, pair_set))  # by set, the highest count first
    first = best[np.r_[True, pair_set[best][1:] != pair_set[best][:-1]]]
    chosen = np.full(len(groups), -1, dtype=np.int64)
    held = np.zeros(len(groups), dtype=np.int64)
    chosen[pair_set[first]] = pair_decision[first]
    held[pair_set[first]] = counts[first]
    decided_sets = held >= 2
    holds = np.zeros(len(members), dtype=bool)
    for_member = chosen[set_of]
    some = for_member >= 0
    holds[some] = kept.holds(members[some], for_member[some])
    starts = np.cumsum(sizes) - sizes
    answer = []
    for n, group in enumerate(groups):
        if not decided_sets[n]:
            answer.append(group)
        elif held[n] == sizes[n]:
            if include_kept:
                answer.append(replace(group, kept=True))
        else:
            new = ~holds[starts[n] : starts[n] + sizes[n]]
            answer.append(replace(group, reopened=True, new=new))
    return answer


NONE = Decided(Memberships.none(), Memberships.none())
"""No decisions at all."""
