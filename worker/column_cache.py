"""Each portal's search columns kept in the worker process, and refreshed from what changed.

A search used to stream every in-scope asset's columns from MongoDB (SecantusDB serves 16-21
thousand documents a second: a minute for a million assets, before the search core begins). A
portal's assets change little between two of its searches, so each worker process keeps the
columns of the portals it searched last and, before a search, reads only the documents written
since its previous read.

Why that stays right:
- Every write of an asset document stamps `updated_at`: an upload, a failure, a tombstone, a
  pin, merged metadata (`AssetStore`'s writes all do). A refresh reads the portal's documents
  stamped at or after the start of the previous read, less `lag_s`: a write stamped by another
  host's clock a little behind this one's, or committed a little after its stamp, is still read.
  The lag is the bound on both.
- A hashed document read again replaces its row when any column a search reads differs (two
  writes can share a stamp, so stamps are not compared); any other state (deleted, failed,
  pending again) drops the row. Decisions are not cached: a search reads them anew.
- Columns are never changed in place: a refresh builds new arrays and swaps them in, so a
  search still holding the previous ones is not disturbed.
- A scope with criteria (ids, tags, text, dates) asks the database which ids it holds, and only
  their ids; the rows come from the cache.
- The verified matcher's candidate pairs are kept too, once a whole-portal search has found
  them: every proposal rule looks at two assets' hashes alone, so after a refresh the pairs
  among the rows it kept stand, and only the rows it added are searched against all
  (`matching.candidate_pairs_touching`). A scoped search takes its assets' pairs from them.

Memory is a budget: the portals searched least recently are dropped while the cache holds more
than `budget_bytes` (by estimate), and a portal larger than the whole budget is not kept.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from schemas.messages import Scope
from worker.core.columns import joined, same_rows, take
from worker.core.grouping import Candidates
from worker.core.matching import (
    Pairs,
    candidate_pairs,
    candidate_pairs_touching,
    merged_pairs,
    pairs_among,
)
from worker.observability import SEARCH_CACHE_BYTES, SEARCH_CACHE_READS
from worker.store import AssetStore, ColumnChanges, utcnow

log = logging.getLogger(__name__)

#: Estimated bytes of Python objects per row beyond the arrays: the id's and the title's string
#: objects, their list slots, and the id's slot in the row index.
_ROW_OBJECT_BYTES = 2 * 57 + 2 * 8 + 100


def _footprint(columns: Candidates) -> int:
    arrays: list[NDArray[Any]] = [
        columns.phashes,
        columns.pixels,
        columns.uploaded_at_us,
        columns.pinned_at_us,
    ]
    if columns.prints is not None:
        prints = columns.prints
        arrays += [prints.variants, prints.centres, prints.crops, prints.low_detail]
        arrays += [prints.halves, prints.contents, prints.short_sides]
        arrays += [prints.content, prints.pixels, prints.signatures]
        if prints.signature_rows is not None:
            arrays.append(prints.signature_rows)
    text = sum(map(len, columns.asset_ids)) + sum(map(len, columns.titles))
    return sum(a.nbytes for a in arrays) + text + _ROW_OBJECT_BYTES * len(columns.asset_ids)


@dataclass(frozen=True, slots=True)
class _Portal:
    """One portal's cached columns: replaced whole, never changed."""

    columns: Candidates
    """Titles and the verified matcher's hashes (no signatures) of every hashed asset."""
    rows: dict[str, int]
    """Row of each asset id."""
    read_from: datetime
    """When the read that this state includes began, by this process's clock."""
    nbytes: int
    pairs: Pairs | None = None
    """The verified matcher's candidate pairs among all rows, once a search found them."""

    @classmethod
    def of(cls, columns: Candidates, read_from: datetime, pairs: Pairs | None = None) -> _Portal:
        rows = {asset_id: row for row, asset_id in enumerate(columns.asset_ids)}
        extra = 0 if pairs is None else pairs[0].nbytes + pairs[1].nbytes
        return cls(columns, rows, read_from, _footprint(columns) + extra, pairs)

    def with_pairs(self, pairs: Pairs) -> _Portal:
        return replace(self, pairs=pairs, nbytes=self.nbytes + pairs[0].nbytes + pairs[1].nbytes)


def _refreshed(portal: _Portal, read: ColumnChanges, began: datetime, threads: int) -> _Portal:
    """`portal` with what `read` found written again: the rows that differ replaced, new ones
    added, those no longer hashed dropped; as read from `began` on. Its candidate pairs, when
    it has them, are those among the kept rows plus those the new rows take part in."""
    ids = read.columns.asset_ids
    known = np.array([n for n, i in enumerate(ids) if i in portal.rows], dtype=np.intp)
    held = np.array([portal.rows[ids[n]] for n in known.tolist()], dtype=np.intp)
    differ = ~same_rows(take(portal.columns, held), take(read.columns, known))
    dropped = {portal.rows[i] for i in read.gone if i in portal.rows}
    dropped.update(held[differ].tolist())
    fresh = np.ones(len(ids), dtype=bool)
    fresh[known[~differ]] = False  # read again as they are held
    if not dropped and not fresh.any():
        return replace(portal, read_from=began)
    keep = np.ones(len(portal.columns.asset_ids), dtype=bool)
    keep[list(dropped)] = False
    kept = np.flatnonzero(keep)
    columns = joined(take(portal.columns, kept), take(read.columns, np.flatnonzero(fresh)))
    pairs = None
    if portal.pairs is not None and columns.prints is not None:
        added = np.arange(len(kept), len(columns.asset_ids), dtype=np.intp)
        pairs = merged_pairs(
            pairs_among(portal.pairs, kept, len(keep)),
            candidate_pairs_touching(columns.prints, added, threads=threads),
            len(columns.asset_ids),
        )
    log.info(
        "refreshed cached columns: %d rows written or added, %d dropped",
        int(fresh.sum()),
        len(dropped),
    )
    return _Portal.of(columns, began, pairs)


def _shaped(columns: Candidates, *, with_titles: bool, with_prints: bool) -> Candidates:
    """`columns` with titles and fingerprints only where asked for."""
    return replace(
        columns,
        titles=columns.titles if with_titles else [],
        prints=columns.prints if with_prints else None,
    )


def _is_whole_portal(scope: Scope) -> bool:
    return (
        scope.asset_ids is None
        and not scope.tags_all
        and not scope.tags_any
        and scope.text is None
        and scope.uploaded_from is None
        and scope.uploaded_to is None
    )


class ColumnCache:
    """The search columns of the portals this process searched last, within a memory budget."""

    def __init__(
        self, store: AssetStore, *, budget_bytes: int, lag_s: float, threads: int = 1
    ) -> None:
        self._store = store
        self._budget = budget_bytes
        self._lag = timedelta(seconds=lag_s)
        self._threads = threads
        self._portals: OrderedDict[str, _Portal] = OrderedDict()
        # One refresh of a portal at a time; another portal's never waits for it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def held_bytes(self) -> int:
        """Estimated bytes of every cached portal's columns."""
        return sum(portal.nbytes for portal in self._portals.values())

    def cached(self, portal_id: str) -> int | None:
        """How many rows the cache holds for a portal (None: it holds none)."""
        portal = self._portals.get(portal_id)
        return None if portal is None else len(portal.rows)

    async def candidates(
        self, portal_id: str, scope: Scope, *, with_titles: bool, with_prints: bool
    ) -> Candidates:
        """The in-scope hashed assets' columns, as `AssetStore.candidates` reads them without
        signatures, from the cache brought up to date first (or from the store, budget 0)."""
        if self._budget <= 0:
            return await self._store.candidates(
                portal_id,
                scope,
                with_titles=with_titles,
                with_prints=with_prints,
                with_signatures=False,
            )
        async with self._lock(portal_id):
            portal = await self._fresh(portal_id)
        columns, _rows = await self._in_scope(portal_id, portal, scope)
        return _shaped(columns, with_titles=with_titles, with_prints=with_prints)

    async def verified(
        self, portal_id: str, scope: Scope, *, with_titles: bool
    ) -> tuple[Candidates, Pairs]:
        """`candidates` with the verified matcher's hashes, and the candidate pairs among them
        (`matching.candidate_pairs`).

        A whole-portal search finds every asset's pairs once, and the cache keeps them (at a
        million assets that search is most of a repeated search's time); later searches of the
        portal take them as refreshed, and a scoped one takes its assets' pairs from them.
        """
        loop = asyncio.get_running_loop()
        search = partial(candidate_pairs, threads=self._threads)
        if self._budget <= 0:
            columns = await self.candidates(
                portal_id, scope, with_titles=with_titles, with_prints=True
            )
            assert columns.prints is not None
            return columns, await loop.run_in_executor(None, search, columns.prints)
        whole = _is_whole_portal(scope)
        async with self._lock(portal_id):
            portal = await self._fresh(portal_id)
            if portal.pairs is None and whole and portal.columns.prints is not None:
                pairs = await loop.run_in_executor(None, search, portal.columns.prints)
                portal = portal.with_pairs(pairs)
                self._keep(portal_id, portal)
        columns, rows = await self._in_scope(portal_id, portal, scope)
        columns = _shaped(columns, with_titles=with_titles, with_prints=True)
        assert columns.prints is not None
        if rows is None and portal.pairs is not None:
            return columns, portal.pairs
        if rows is not None and portal.pairs is not None:
            return columns, pairs_among(portal.pairs, rows, len(portal.rows))
        return columns, await loop.run_in_executor(None, search, columns.prints)

    def _lock(self, portal_id: str) -> asyncio.Lock:
        """The portal's lock: one refresh of a portal at a time; another portal's never waits."""
        lock = self._locks.get(portal_id)
        if lock is None:
            lock = self._locks[portal_id] = asyncio.Lock()
        return lock

    async def _in_scope(
        self, portal_id: str, portal: _Portal, scope: Scope
    ) -> tuple[Candidates, NDArray[np.intp] | None]:
        """The cached rows `scope` holds, and their positions (None: every row)."""
        if _is_whole_portal(scope):
            return portal.columns, None
        ids = await self._store.scope_ids(portal_id, scope)
        rows = np.array(sorted({portal.rows[i] for i in ids if i in portal.rows}), dtype=np.intp)
        return take(portal.columns, rows), rows

    async def _fresh(self, portal_id: str) -> _Portal:
        began = utcnow()
        portal = self._portals.get(portal_id)
        SEARCH_CACHE_READS.labels("full" if portal is None else "refresh").inc()
        if portal is None:
            read = await self._store.changed_columns(portal_id, None)
            portal = _Portal.of(read.columns, began)
            log.info("cached the columns of portal %s: %d assets", portal_id, len(portal.rows))
        else:
            read = await self._store.changed_columns(portal_id, portal.read_from - self._lag)
            # Rebuilding a million rows takes a few tenths of a second: off the event loop.
            loop = asyncio.get_running_loop()
            portal = await loop.run_in_executor(
                None, _refreshed, portal, read, began, self._threads
            )
        self._keep(portal_id, portal)
        return portal

    def _keep(self, portal_id: str, portal: _Portal) -> None:
        """Keep `portal` as the most recently used, dropping the least recently used portals
        while the cache holds more than its budget (and `portal` too if it alone does)."""
        self._portals[portal_id] = portal
        self._portals.move_to_end(portal_id)
        while self._portals and self.held_bytes > self._budget:
            dropped, gone = self._portals.popitem(last=False)
            log.info(
                "dropped the cached columns of portal %s (%d assets) to stay within %d MiB",
                dropped,
                len(gone.rows),
                self._budget // (1024 * 1024),
            )
        SEARCH_CACHE_BYTES.set(self.held_bytes)
