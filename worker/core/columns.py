"""Rows of a search's columns taken, compared and joined: what a cache of them is made of.

A search reads its assets as columns (`grouping.Candidates`, with `matching.Fingerprints` for
the verified matcher). A worker that keeps a portal's columns between searches compares the
rows it reads again with those it holds, drops those that changed and appends them as they are
now; every step makes new arrays and leaves the old ones as they were, so a search still holding
them is not disturbed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from worker.core.grouping import Candidates
from worker.core.matching import Fingerprints


def take(columns: Candidates, rows: NDArray[np.intp]) -> Candidates:
    """The given rows of `columns`, in that order (titles only where `columns` has them)."""
    listed = rows.tolist()
    ids = columns.asset_ids
    return Candidates(
        asset_ids=[ids[row] for row in listed],
        phashes=columns.phashes[rows],
        pixels=columns.pixels[rows],
        uploaded_at_us=columns.uploaded_at_us[rows],
        pinned_at_us=columns.pinned_at_us[rows],
        titles=[columns.titles[row] for row in listed] if columns.titles else [],
        prints=None if columns.prints is None else _take_prints(columns.prints, rows),
    )


def same_rows(first: Candidates, second: Candidates) -> NDArray[np.bool_]:
    """Whether each row of `first` holds what the same row of `second` holds, in every column
    a search reads (signatures aside: a cache holds none)."""
    same = (
        (first.phashes == second.phashes)
        & (first.pixels == second.pixels)
        & (first.uploaded_at_us == second.uploaded_at_us)
        & (first.pinned_at_us == second.pinned_at_us)
    )
    if first.titles or second.titles:
        same &= np.array([a == b for a, b in zip(first.titles, second.titles, strict=True)], bool)
    if (first.prints is None) != (second.prints is None):
        raise ValueError("columns with fingerprints are compared with columns without")
    if first.prints is not None and second.prints is not None:
        one, two = first.prints, second.prints
        same &= (one.variants == two.variants).all(axis=1) & (one.crops == two.crops).all(axis=1)
        same &= (one.centres == two.centres) & (one.low_detail == two.low_detail)
        same &= (one.content == two.content) & (one.pixels == two.pixels)
        same &= (one.contents == two.contents) & (one.halves == two.halves).all(axis=1)
        same &= one.short_sides == two.short_sides
    return same


def joined(first: Candidates, second: Candidates) -> Candidates:
    """The rows of `first`, then those of `second`; both have titles and prints, or neither."""
    if bool(first.titles) != bool(second.titles) and first.asset_ids and second.asset_ids:
        raise ValueError("columns with titles are joined to columns without")
    if (first.prints is None) != (second.prints is None):
        raise ValueError("columns with fingerprints are joined to columns without")
    return Candidates(
        asset_ids=first.asset_ids + second.asset_ids,
        phashes=np.concatenate([first.phashes, second.phashes]),
        pixels=np.concatenate([first.pixels, second.pixels]),
        uploaded_at_us=np.concatenate([first.uploaded_at_us, second.uploaded_at_us]),
        pinned_at_us=np.concatenate([first.pinned_at_us, second.pinned_at_us]),
        titles=first.titles + second.titles,
        prints=None
        if first.prints is None or second.prints is None
        else _join_prints(first.prints, second.prints),
    )


def _signature_rows(prints: Fingerprints) -> NDArray[np.intp]:
    if prints.signature_rows is None:
        return np.arange(len(prints.phashes), dtype=np.intp)
    return prints.signature_rows


def _content_rows(prints: Fingerprints) -> NDArray[np.intp]:
    if prints.content_rows is None:
        return np.full(len(prints.phashes), -1, dtype=np.intp)
    return prints.content_rows


def _take_prints(prints: Fingerprints, rows: NDArray[np.intp]) -> Fingerprints:
    return Fingerprints(
        phashes=prints.phashes[rows],
        variants=prints.variants[rows],
        centres=prints.centres[rows],
        crops=prints.crops[rows],
        signatures=prints.signatures,
        low_detail=prints.low_detail[rows],
        content=prints.content[rows],
        pixels=prints.pixels[rows],
        halves=prints.halves[rows],
        contents=prints.contents[rows],
        short_sides=prints.short_sides[rows],
        signature_rows=_signature_rows(prints)[rows],
        content_signatures=prints.content_signatures,
        content_rows=_content_rows(prints)[rows],
    )


def _join_prints(first: Fingerprints, second: Fingerprints) -> Fingerprints:
    # The second's signatures follow the first's; -1 (not loaded) stays -1.
    shifted = _signature_rows(second)
    shifted = np.where(shifted < 0, shifted, shifted + len(first.signatures))
    framed = _content_rows(second)
    framed = np.where(framed < 0, framed, framed + len(first.content_signatures))
    return Fingerprints(
        phashes=np.concatenate([first.phashes, second.phashes]),
        variants=np.concatenate([first.variants, second.variants]),
        centres=np.concatenate([first.centres, second.centres]),
        crops=np.concatenate([first.crops, second.crops]),
        signatures=np.concatenate([first.signatures, second.signatures]),
        low_detail=np.concatenate([first.low_detail, second.low_detail]),
        content=np.concatenate([first.content, second.content]),
        pixels=np.concatenate([first.pixels, second.pixels]),
        halves=np.concatenate([first.halves, second.halves]),
        contents=np.concatenate([first.contents, second.contents]),
        short_sides=np.concatenate([first.short_sides, second.short_sides]),
        signature_rows=np.concatenate([_signature_rows(first), shifted]),
        content_signatures=np.concatenate([first.content_signatures, second.content_signatures]),
        content_rows=np.concatenate([_content_rows(first), framed]),
    )
