"""The verified matcher: cheap candidates from stored hashes, each confirmed by its signature.

A pHash radius is not a matcher: unrelated photos fall within 8 bits by chance at portal scale,
stereo pairs of one scene sit 4 bits apart, and a 5 % crop can move a hash 18 bits. So pairs are
first proposed generously but cheaply, by several small-radius searches instead of one large
one (pHash within `NEAR_RADIUS`, centre hash within `CENTRE_RADIUS`, a crop hash of one within
`CROP_RADIUS` of the other's pHash, a mirror or rotation variant within `TURN_RADIUS`, or the
same bytes), then confirmed on the 32 x 32 signatures:

- `near`: the Pearson correlation of the two signatures reaches `NEAR_SIMILARITY`, as it is or
  else maximised over 36 small border crops of either image (up to 6 % of each side).
  Correlation ignores brightness, contrast and colour; the crop search absorbs trimmed borders.
  A stereo pair or another region of the same shoot does not line up under any crop.
- `mirrored` / `rotated`: the transformed signature correlates to `TURN_SIMILARITY` or more
  without any crop; turned copies are rarer than unrelated look-alikes (the quadrants of a
  symmetric photo are each other's mirror images at a glance), so they must agree closely.
- `identical`: same bytes. Low-detail images are matched only so, or by identical pixels.

A pair with an image smaller than the signature is also compared at a resolution both have
(`coarse_similarity`): its signature was enlarged, and holds detail the image never had.

The thresholds come from `benchmarks/quality.py`, which prints the margins they leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cache

import numpy as np
from numpy.typing import NDArray

from worker.core.fingerprint import (
    CROP_COUNT,
    HALVES,
    SIGNATURE_SIDE,
    VARIANTS,
    WIDE_CROPS,
    crop_shares,
    trim_matrix,
)
from worker.core.hashing import HashedImage
from worker.core.neighbours import cross_pairs, pairs_between, pairs_within

#: Candidates: pHashes within this many bits (re-encodes, resizes, tone changes: 0-2 measured on
#: the quality set). 4 keeps it to one flipped bit per index chunk, a tenth of the probes of 6;
#: stronger tone changes (brightness x1.4: 10 bits) are still proposed by the centre hash.
NEAR_RADIUS = 4
#: Candidates: centre hashes within this many bits (corner logos: 0-8 measured).
CENTRE_RADIUS = 8
#: Candidates: a crop hash of one asset within this many bits of the other's pHash (border crops
#: of 2-5 %: 0-6 measured, where their pHashes were up to 18 bits apart). 4 rather than 6: one
#: flipped bit per index chunk instead of two makes this nine-column search three times cheaper
#: at a million assets, for 0.95 instead of 1.00 of the benchmark's crops.
CROP_RADIUS = 4
#: Candidates: a mirror or rotation variant within this many bits of the other pHash (0-2
#: measured: a turn of the pixels is exact, only resampling differs).
TURN_RADIUS = 4
#: Confirmation: best correlation over border crops at least this.
NEAR_SIMILARITY = 0.92
#: Confirmation of a mirrored or rotated copy: correlation of the turned signature at least this.
TURN_SIMILARITY = 0.99

#: Candidates: the hash of the same half (top, bottom, left, right) within this many bits, where
#: a corner logo or an edge band leaves the other halves as they were.
HALF_RADIUS = 2
#: Candidates: the content hash of an asset in a uniform border within this many bits of
#: another's pHash or content hash (a framed copy's content against its original: 0-4).
CONTENT_RADIUS = 4

#: An image whose shorter side is under `SIGNATURE_SIDE` pixels was enlarged to make its
#: signature, so the signature holds detail the image never had (a 26-pixel copy correlated
#: 0.84 with its 102-pixel original). A pair with such an image, still open after the other
#: confirmations, is also compared at a resolution both have: signatures averaged down to
#: `COARSE_SIDE` x `COARSE_SIDE`. Chosen on the tuning half of `benchmarks/holdout.py`: at 16 x 16
#: a star field's 24-pixel thumbnail reached only 0.91.
COARSE_SIDE = 8
#: Images with a shorter side under this are not compared coarsely: fewer pixels than the grid.
COARSE_MIN_SIDE = COARSE_SIDE
#: Confirmation of a coarse comparison: at 8 x 8 a stereo view's thumbnail reaches 0.93 with the
#: other view (the tuning half's hard negative), true thumbnails of 24 pixels 0.96 and more.
COARSE_SIMILARITY = 0.95

#: Candidate pairs confirmed at once (see `_confirm`).
_CONFIRM_BLOCK = 64

#: Pairs whose plain correlation is below this are not aligned (border crops of the benchmark
#: start from 0.7 before alignment).
ALIGN_FROM = 0.5

#: Kinds of match, as published; the position is the code used in arrays.
KINDS: tuple[str, ...] = ("original", "identical", "same_phash", "near", "mirrored", "rotated")
_CODE = {kind: code for code, kind in enumerate(KINDS)}

#: Crops tried when aligning two signatures: (left, top, right, bottom) shares of each side.
_STEPS = (0.0, 0.03, 0.06)
_CROPS = (
    tuple(
        (left, top, right, bottom)
        for left in _STEPS
        for right in _STEPS
        for top in _STEPS
        for bottom in _STEPS
        if left + right <= 0.06 + 1e-9 and top + bottom <= 0.06 + 1e-9
    )
    + WIDE_CROPS
)  # the wider crops a wide crop hash proposes


@dataclass(frozen=True, slots=True)
class Fingerprints:
    """The columns the verified matcher reads, one row per in-scope asset."""

    phashes: NDArray[np.uint64]
    variants: NDArray[np.uint64]
    """Shape (n, 4): mirror, rot90, rot180, rot270 (see `fingerprint.VARIANTS`)."""
    centres: NDArray[np.uint64]
    crops: NDArray[np.uint64]
    """Shape (n, CROP_COUNT): see `fingerprint.CROPS` and `fingerprint.WIDE_CROPS`."""
    signatures: NDArray[np.uint8]
    """Shape (rows, SIGNATURE_SIDE ** 2): one row per asset, or per asset in `signature_rows`."""
    low_detail: NDArray[np.bool_]
    content: NDArray[np.int64]
    """A 64-bit prefix of each asset's content checksum (sha256 of its bytes)."""
    pixels: NDArray[np.int64]
    """A 64-bit prefix of the checksum of decoded pixels for low-detail assets, else 0."""
    halves: NDArray[np.uint64]
    """Shape (n, 4): see `fingerprint.HALVES`; 0 for an asset hashed before halves were."""
    contents: NDArray[np.uint64]
    """pHash of the picture inside each asset's uniform border (`borders`); 0 where it has
    none (a pHash always has its top bit set, so 0 is no pHash)."""
    short_sides: NDArray[np.int32]
    """Each asset's shorter side in pixels (0: not known, compared as a large image)."""
    signature_rows: NDArray[np.intp] | None = None
    """Where each asset's signature is in `signatures` (-1: not loaded); None: row i is asset i.
    A search loads signatures only for the assets its candidate pairs name."""
    content_signatures: NDArray[np.uint8] = field(default_factory=lambda: _rows(0))
    """The 32 x 32 of the picture inside the border, of the assets `content_rows` points at."""
    content_rows: NDArray[np.intp] | None = None
    """Where each asset's content signature is in `content_signatures` (-1: none, or not
    loaded); None: none is."""

    def signature_of(self, assets: NDArray[np.intp]) -> NDArray[np.uint8]:
        """The signatures of the given assets, one row each."""
        if self.signature_rows is None:
            return self.signatures[assets]
        return self.signatures[self.signature_rows[assets]]

    def content_signature_of(self, assets: NDArray[np.intp]) -> NDArray[np.uint8]:
        """The content signatures of the given assets, one row each; blank (which correlates
        with nothing) where there is none."""
        out = _rows(len(assets))
        if self.content_rows is not None:
            rows = self.content_rows[assets]
            known = rows >= 0
            out[known] = self.content_signatures[rows[known]]
        return out


def _rows(count: int) -> NDArray[np.uint8]:
    return np.zeros((count, SIGNATURE_SIDE * SIGNATURE_SIDE), dtype=np.uint8)


Pairs = tuple[NDArray[np.intp], NDArray[np.intp]]
"""Candidate pairs (first, second) of asset positions, first < second."""


@dataclass(frozen=True, slots=True)
class Matches:
    """Confirmed pairs (i < j), with how j matches i and i matches j."""

    first: NDArray[np.intp]
    second: NDArray[np.intp]
    distance: NDArray[np.int64]
    """pHash distance, after the turn for mirrored and rotated pairs."""
    kind: NDArray[np.int8]
    """Code into `KINDS`."""
    similarity: NDArray[np.float64]


def columns(images: Sequence[HashedImage]) -> Fingerprints:
    """The matcher's columns for freshly hashed images (the store reads the same from documents)."""
    prints = [image.fingerprint for image in images if image.fingerprint is not None]
    if len(prints) != len(images):
        raise ValueError("every image needs a fingerprint (hash_image makes one)")
    inside, inside_rows = content_columns([p.content_signature for p in prints])
    return Fingerprints(
        phashes=hex_column([p.phash for p in prints]),
        variants=hex_column([v for p in prints for v in p.variants]).reshape(-1, len(VARIANTS)),
        centres=hex_column([p.centre for p in prints]),
        crops=hex_column([c for p in prints for c in p.crops]).reshape(-1, CROP_COUNT),
        signatures=np.frombuffer(b"".join(p.signature for p in prints), np.uint8).reshape(
            len(prints), SIGNATURE_SIDE * SIGNATURE_SIDE
        ),
        low_detail=np.array([p.low_detail for p in prints], dtype=bool),
        content=checksum_column([image.sha256 for image in images]),
        pixels=checksum_column([image.pixels_sha256 for image in images]),
        halves=hex_column([h or "0" for p in prints for h in p.halves]).reshape(-1, len(HALVES)),
        contents=hex_column([p.content_phash or "0" for p in prints]),
        short_sides=np.array([min(i.width, i.height) for i in images], dtype=np.int32),
        content_signatures=inside,
        content_rows=inside_rows,
    )


def content_columns(
    signatures: Sequence[bytes | None],
) -> tuple[NDArray[np.uint8], NDArray[np.intp]]:
    """The content signatures there are, in order, as rows (`Fingerprints.content_signatures`),
    and the row of each asset's (`Fingerprints.content_rows`, -1 for none)."""
    present = np.array([s is not None for s in signatures], dtype=bool)
    rows = np.full(len(signatures), -1, dtype=np.intp)
    rows[present] = np.arange(int(present.sum()))
    matrix = np.frombuffer(b"".join(s for s in signatures if s is not None), dtype=np.uint8)
    return matrix.reshape(-1, SIGNATURE_SIDE * SIGNATURE_SIDE), rows


def hex_column(values: Sequence[str]) -> NDArray[np.uint64]:
    """16-digit hex hashes as an unsigned 64-bit column."""
    return np.array([int(v, 16) for v in values], dtype=np.uint64)


def checksum_column(values: Sequence[str | None]) -> NDArray[np.int64]:
    """The first 64 bits of hex checksums as a signed column; 0 where there is none."""
    return np.array(
        [int.from_bytes(bytes.fromhex(v[:16]), "big", signed=True) if v else 0 for v in values],
        dtype=np.int64,
    )


def named_assets(pairs: Pairs) -> NDArray[np.intp]:
    """The assets whose signatures confirming `pairs` needs, in position order."""
    return np.unique(np.concatenate(pairs)).astype(np.intp)


def with_signatures(
    prints: Fingerprints,
    assets: NDArray[np.intp],
    signatures: Sequence[bytes | None],
    contents: Sequence[bytes | None] | None = None,
) -> Fingerprints:
    """`prints` with the signatures of `assets` attached (a missing one reads as blank, which
    confirms nothing), and their content signatures where they have one."""
    size = SIGNATURE_SIDE * SIGNATURE_SIDE
    blank = bytes(size)
    matrix = np.frombuffer(b"".join(s or blank for s in signatures), dtype=np.uint8)
    rows = np.full(len(prints.phashes), -1, dtype=np.intp)
    rows[assets] = np.arange(len(assets))
    inside, inside_rows = content_columns(
        list(contents) if contents is not None else [None] * len(assets)
    )
    framed = np.full(len(prints.phashes), -1, dtype=np.intp)
    framed[assets] = inside_rows
    return replace(
        prints,
        signatures=matrix.reshape(-1, size),
        signature_rows=rows,
        content_signatures=inside,
        content_rows=framed,
    )


def confirmed_pairs(
    prints: Fingerprints, *, threads: int = 1, pairs: Pairs | None = None
) -> Matches:
    """Every pair of assets the verified matcher accepts as copies of one another.

    `pairs` are the candidates when already found (`candidate_pairs`); the signatures of their
    assets must be loaded.
    """
    found = scored_candidates(prints, threads=threads, pairs=pairs)
    accepted = found.kind >= 0
    return Matches(
        found.first[accepted],
        found.second[accepted],
        found.distance[accepted],
        found.kind[accepted],
        found.similarity[accepted],
    )


def scored_candidates(
    prints: Fingerprints, *, threads: int = 1, pairs: Pairs | None = None
) -> Matches:
    """Every candidate pair with its verdict: kind -1 where the signatures did not confirm it."""
    first, second = candidate_pairs(prints, threads=threads) if pairs is None else pairs
    return _confirm(prints, first, second)


def candidate_pairs(prints: Fingerprints, *, threads: int = 1) -> Pairs:
    """The pairs (i < j) worth confirming, from the stored hashes alone (no signature read)."""
    n = len(prints.phashes)
    first_parts, second_parts = [], []
    for hashes, radius in ((prints.phashes, NEAR_RADIUS), (prints.centres, CENTRE_RADIUS)):
        i, j, _ = pairs_within(hashes, radius, threads=threads)
        first_parts.append(i)
        second_parts.append(j)
    for queries, radius in ((prints.variants, TURN_RADIUS), (prints.crops, CROP_RADIUS)):
        i, j, _ = cross_pairs(queries, prints.phashes, radius, threads=threads)
        first_parts.append(i)
        second_parts.append(j)
    i, j = _equal_pairs(prints.content, skip=0)
    first_parts.append(i)
    second_parts.append(j)
    pixel_keys = np.where(prints.low_detail, prints.pixels, 0)
    i, j = _equal_pairs(pixel_keys, skip=0)
    first_parts.append(i)
    second_parts.append(j)
    for column in range(len(HALVES)):
        known = _known(prints.halves[:, column])
        i, j, _ = pairs_within(prints.halves[known, column], HALF_RADIUS, threads=threads)
        first_parts.append(known[i])
        second_parts.append(known[j])
    framed = _framed(prints)
    for every, inside in _content_pairs(prints, framed, framed, threads):
        first_parts.append(every)
        second_parts.append(inside)
    return _unique_pairs(first_parts, second_parts, n)


def _known(hashes: NDArray[np.uint64]) -> NDArray[np.intp]:
    """Positions of the hashes that are known (0: the asset was hashed before they were)."""
    return np.flatnonzero(hashes != 0).astype(np.intp)


def _framed(prints: Fingerprints) -> NDArray[np.intp]:
    """The assets with a content hash (a picture in a uniform border), low detail aside."""
    return np.flatnonzero((prints.contents != 0) & ~prints.low_detail).astype(np.intp)


def _content_pairs(
    prints: Fingerprints, framed: NDArray[np.intp], among: NDArray[np.intp], threads: int
) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """Pairs (any asset, framed asset) where a framed asset's content hash is within
    `CONTENT_RADIUS` of another's pHash, or of the content hash of one of `among`."""
    contents = prints.contents[framed]
    every, inside, _ = pairs_between(prints.phashes, contents, CONTENT_RADIUS, threads=threads)
    other, inside_too, _ = pairs_between(
        prints.contents[among], contents, CONTENT_RADIUS, threads=threads
    )
    return [(every, framed[inside]), (among[other], framed[inside_too])]


def candidate_pairs_touching(
    prints: Fingerprints, rows: NDArray[np.intp], *, threads: int = 1
) -> Pairs:
    """The pairs of `candidate_pairs(prints)` with at least one asset among `rows`.

    Every proposal rule is a test on two assets' hashes alone, so when a few assets change,
    the pairs among the others stand and only these need finding: each search indexes the
    hashes of `rows` (few) and probes them with every asset's, where `candidate_pairs` indexes
    them all. The tests hold the two equal against brute force.
    """
    rows = np.unique(np.asarray(rows, dtype=np.intp))
    if rows.size == 0 or len(prints.phashes) < 2:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    first_parts, second_parts = [], []

    def add(every: NDArray[np.intp], changed: NDArray[np.intp]) -> None:
        first_parts.append(every)
        second_parts.append(rows[changed])

    for hashes, radius in ((prints.phashes, NEAR_RADIUS), (prints.centres, CENTRE_RADIUS)):
        every, changed, _ = pairs_between(hashes, hashes[rows], radius, threads=threads)
        add(every, changed)
    for several, radius in ((prints.variants, TURN_RADIUS), (prints.crops, CROP_RADIUS)):
        # A changed asset's variants against every pHash, and every asset's against its pHash.
        every, changed, _ = pairs_between(prints.phashes, several[rows], radius, threads=threads)
        add(every, changed)
        columns = several.shape[1]
        flat = np.ascontiguousarray(several).reshape(-1)
        entry, changed, _ = pairs_between(flat, prints.phashes[rows], radius, threads=threads)
        add(entry // columns, changed)
    pixel_keys = np.where(prints.low_detail, prints.pixels, 0)
    for keys in (prints.content, pixel_keys):
        wanted = keys[rows]
        sharing = np.flatnonzero(np.isin(keys, wanted[wanted != 0]))
        i, j = _equal_pairs(keys[sharing], skip=0)
        first_parts.append(sharing[i])
        second_parts.append(sharing[j])
    for column in range(len(HALVES)):
        halves = prints.halves[:, column]
        known = _known(halves)
        changed = np.intersect1d(known, rows)
        i, j, _ = pairs_between(halves[known], halves[changed], HALF_RADIUS, threads=threads)
        first_parts.append(known[i])
        second_parts.append(changed[j])
    framed = _framed(prints)
    if framed.size:
        # A changed framed asset's content against every pHash and content hash (which covers
        # the changed assets' content hashes against every framed one), and every framed
        # asset's content against the changed assets' pHashes.
        changed_framed = np.intersect1d(framed, rows)
        parts = _content_pairs(prints, changed_framed, framed, threads)
        near, inside, _ = pairs_between(
            prints.contents[framed], prints.phashes[rows], CONTENT_RADIUS, threads=threads
        )
        parts.append((rows[inside], framed[near]))
        for every, framed_one in parts:
            first_parts.append(every)
            second_parts.append(framed_one)
    first, second = _unique_pairs(first_parts, second_parts, len(prints.phashes))
    touching = np.zeros(len(prints.phashes), dtype=bool)
    touching[rows] = True
    keep = touching[first] | touching[second]
    return first[keep], second[keep]


def pairs_among(pairs: Pairs, rows: NDArray[np.intp], n: int) -> Pairs:
    """The pairs with both assets among `rows` (ascending positions out of `n`), renumbered as
    positions in `rows`: the candidate pairs of a scope, or of the assets a change kept, from
    those of the whole portal (each rule looks at the two assets alone)."""
    position = np.full(n, -1, dtype=np.intp)
    position[rows] = np.arange(len(rows))
    first, second = position[pairs[0]], position[pairs[1]]
    keep = (first >= 0) & (second >= 0)
    return first[keep], second[keep]


def merged_pairs(first: Pairs, second: Pairs, n: int) -> Pairs:
    """The pairs of both, each once, sorted as `candidate_pairs` returns them."""
    return _unique_pairs([first[0], second[0]], [first[1], second[1]], n)


def _unique_pairs(firsts: list[NDArray[np.intp]], seconds: list[NDArray[np.intp]], n: int) -> Pairs:
    """The pairs of the parts, each once as (smaller, larger), sorted; none of an asset with
    itself."""
    a, b = np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)
    codes = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    first, second = np.divmod(codes, n)
    keep = first != second
    return first[keep].astype(np.intp), second[keep].astype(np.intp)


def _equal_pairs(
    keys: NDArray[np.int64], skip: int | None = None
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """All pairs (i < j) with equal keys (excluding the key `skip`)."""
    if len(keys) < 2:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    # Only groups of two or more make pairs: select them with arrays, loop over those alone
    # (a handful in a portal; looping over every distinct key costs seconds at a million).
    shared = ends - starts >= 2
    if skip is not None:
        shared &= sorted_keys[starts] != skip
    firsts, seconds = [np.empty(0, np.intp)], [np.empty(0, np.intp)]
    for s, e in zip(starts[shared].tolist(), ends[shared].tolist(), strict=True):
        members = np.sort(order[s:e])
        a, b = np.triu_indices(e - s, 1)
        firsts.append(members[a])
        seconds.append(members[b])
    return np.concatenate(firsts).astype(np.intp), np.concatenate(seconds).astype(np.intp)


def _confirm(prints: Fingerprints, first: NDArray[np.intp], second: NDArray[np.intp]) -> Matches:
    """Verdicts on candidate pairs, a block at a time: every pair's signatures are widened to
    float64 and aligned, so confirming ten thousand pairs at once took 300 MB; in blocks it
    takes a few, whatever the number of pairs."""
    blocks = [
        _confirm_block(prints, first[lo : lo + _CONFIRM_BLOCK], second[lo : lo + _CONFIRM_BLOCK])
        for lo in range(0, max(len(first), 1), _CONFIRM_BLOCK)
    ]
    return Matches(*(np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(Matches)))


def _confirm_block(
    prints: Fingerprints, first: NDArray[np.intp], second: NDArray[np.intp]
) -> Matches:
    k = len(first)
    kind = np.full(k, -1, dtype=np.int8)
    similarity = np.zeros(k)
    distance = np.bitwise_count(prints.phashes[first] ^ prints.phashes[second]).astype(np.int64)

    # 0 = no checksum known, as in `candidate_pairs`: two unknowns are not the same bytes.
    same_bytes = (prints.content[first] == prints.content[second]) & (prints.content[first] != 0)
    kind[same_bytes] = _CODE["identical"]
    similarity[same_bytes] = 1.0
    low = prints.low_detail[first] | prints.low_detail[second]
    same_pixels = low & ~same_bytes & (prints.pixels[first] == prints.pixels[second])
    same_pixels &= prints.pixels[first] != 0
    kind[same_pixels] = _CODE["same_phash"]
    similarity[same_pixels] = 1.0

    open_ = (kind < 0) & ~low
    if open_.any():
        rows = np.flatnonzero(open_)
        score = _near_similarity(
            prints.signature_of(first[rows]), prints.signature_of(second[rows])
        )
        near = score >= NEAR_SIMILARITY
        kind[rows[near]] = np.where(distance[rows[near]] == 0, _CODE["same_phash"], _CODE["near"])
        similarity[rows] = score
    for column, (transform, name) in enumerate(VARIANTS):
        open_ = (kind < 0) & ~low
        turned = np.bitwise_count(prints.variants[first, column] ^ prints.phashes[second])
        turned = turned.astype(np.int64)
        # The variant is a function of the first image; the pair may also be turned the other way.
        back = np.bitwise_count(prints.variants[second, column] ^ prints.phashes[first])
        back = back.astype(np.int64)
        forward = open_ & (turned <= TURN_RADIUS)
        backward = open_ & ~forward & (back <= TURN_RADIUS)
        for rows, source, target, bits in (
            (np.flatnonzero(forward), first, second, turned),
            (np.flatnonzero(backward), second, first, back),
        ):
            if rows.size == 0:
                continue
            a = _normalised(_turn(prints.signature_of(source[rows]), transform))
            b = _normalised(prints.signature_of(target[rows]))
            score = np.einsum("ij,ij->i", a, b)
            ok = score >= TURN_SIMILARITY
            kind[rows[ok]] = _CODE[name]
            similarity[rows[ok]] = score[ok]
            distance[rows[ok]] = bits[rows[ok]]
    # Pairs still open may be crops beyond alignment's reach, or pictures in a border.
    framed = (prints.contents[first] != 0) | (prints.contents[second] != 0)
    for scored, worth in ((_proposed_crop_similarity, ~low), (_content_similarity, framed)):
        open_ = (kind < 0) & ~low & worth
        if open_.any():
            rows = np.flatnonzero(open_)
            score = scored(prints, first[rows], second[rows])
            kind[rows[score >= NEAR_SIMILARITY]] = _CODE["near"]
            similarity[rows] = np.maximum(similarity[rows], score)
    smaller = np.minimum(prints.short_sides[first], prints.short_sides[second])
    open_ = (kind < 0) & ~low & (smaller >= COARSE_MIN_SIDE) & (smaller < SIGNATURE_SIDE)
    if open_.any():
        rows = np.flatnonzero(open_)
        score = coarse_similarity(
            prints.signature_of(first[rows]), prints.signature_of(second[rows])
        )
        kind[rows[score >= COARSE_SIMILARITY]] = _CODE["near"]
        similarity[rows] = np.maximum(similarity[rows], score)
    return Matches(first, second, distance, kind, similarity)


def coarse_similarity(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.float64]:
    """The correlation of each pair of signatures averaged down to `COARSE_SIDE` a side: what
    an image smaller than the signature and its larger original still share."""
    block = SIGNATURE_SIDE // COARSE_SIDE

    def averaged(signatures: NDArray[np.uint8]) -> NDArray[np.float64]:
        images = signatures.reshape(-1, COARSE_SIDE, block, COARSE_SIDE, block)
        return images.mean(axis=(2, 4), dtype=np.float64).reshape(len(signatures), -1)

    return np.einsum("ij,ij->i", _normalised(averaged(a)), _normalised(averaged(b)))


def _proposed_crop_similarity(
    prints: Fingerprints, first: NDArray[np.intp], second: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Best correlation of one's signature trimmed as a crop hash of it that lies within
    `CROP_RADIUS` of the other's pHash says, with the other's (-1 where none does).

    The crop hash already says where the copy lies in its original; checking that one trim
    needs no search over crops, and no gate on the untrimmed correlation, which an 8 % crop
    pulls to anywhere between 0 and 0.6.
    """
    best = np.full(len(first), -1.0)
    for column, (rows, cols) in enumerate(_crop_trims()):
        for source, target in ((first, second), (second, first)):
            bits = np.bitwise_count(prints.crops[source, column] ^ prints.phashes[target])
            close = np.flatnonzero(bits <= CROP_RADIUS)
            if close.size == 0:
                continue
            side = SIGNATURE_SIDE
            images = prints.signature_of(source[close]).reshape(-1, side, side)
            trimmed = (rows[None] @ images.astype(np.float64) @ cols.T[None]).reshape(
                len(close), side * side
            )
            a, b = _normalised(trimmed), _normalised(prints.signature_of(target[close]))
            best[close] = np.maximum(best[close], np.einsum("ij,ij->i", a, b))
    return best


@cache
def _crop_trims() -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Per crop hash, the resample matrices of its trim for rows and columns."""
    side = SIGNATURE_SIDE
    return [
        (trim_matrix(side, top, bottom), trim_matrix(side, left, right))
        for left, top, right, bottom in crop_shares()
    ]


def _content_similarity(
    prints: Fingerprints, first: NDArray[np.intp], second: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Best correlation of the picture inside one's border with the other, whole or inside its
    own border (a blank content signature correlates with nothing), aligned as `near` is."""
    whole = (prints.signature_of(first), prints.signature_of(second))
    inside = (prints.content_signature_of(first), prints.content_signature_of(second))
    best = np.full(len(first), -1.0)
    for raw_a, raw_b in ((inside[0], whole[1]), (whole[0], inside[1]), inside):
        best = np.maximum(best, _near_similarity(raw_a, raw_b))
    return best


def _near_similarity(raw_a: NDArray[np.uint8], raw_b: NDArray[np.uint8]) -> NDArray[np.float64]:
    """The correlation of each pair of signatures, or the best with a corner or an edge band
    left out, or where it falls short of the `near` threshold but not far, over border crops.

    Aligning costs 72 crops a pair: not for pairs no crop could lift over the threshold, nor
    for pairs already over it (most true copies), whose similarity is then the plain
    correlation. Masks cost eight correlations, and a band across the picture (a caption) can
    pull the plain correlation of a copy far below where aligning starts.
    """
    a, b = _normalised(raw_a), _normalised(raw_b)
    score = np.einsum("ij,ij->i", a, b)
    short = score < NEAR_SIMILARITY
    align = short & (score >= ALIGN_FROM)
    score[short] = np.maximum(score[short], masked_similarity(raw_a[short], raw_b[short]))
    score[align] = np.maximum(score[align], aligned_similarity(a[align], b[align]))
    return score


def _turn(signatures: NDArray[np.uint8], transform: str) -> NDArray[np.uint8]:
    side = SIGNATURE_SIDE
    images = signatures.reshape(-1, side, side)
    turned = {
        "mirror": images[:, :, ::-1],
        "rot90": np.rot90(images, 1, axes=(1, 2)),
        "rot180": np.rot90(images, 2, axes=(1, 2)),
        "rot270": np.rot90(images, 3, axes=(1, 2)),
    }[transform]
    return np.ascontiguousarray(turned).reshape(len(signatures), side * side)


def _normalised(signatures: NDArray[np.uint8] | NDArray[np.float64]) -> NDArray[np.float64]:
    values = signatures.astype(np.float64)
    values -= values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms == 0, 1.0, norms)


@cache
def _crop_axes() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The crop-and-resize of every `_CROPS` entry, as one matrix per axis
    (`fingerprint.trim_matrix`)."""
    side = SIGNATURE_SIDE
    rows = np.stack([trim_matrix(side, top, bottom) for _, top, _, bottom in _CROPS])
    cols = np.stack([trim_matrix(side, left, right) for left, _, right, _ in _CROPS])
    return rows, cols


#: Side of the corner square left out by `masked_similarity`, as a share of the side: 11 of 32
#: pixels. A logo 20 % wide, 2 % in from the edges, with a line of credit under it and the
#: Lanczos shrink's ringing around it, reaches 9-10 pixels; a square of 8 left the tuning half's
#: logos on dark pictures at 0.81-0.92, one of 11 lifts them to 0.998 (`benchmarks/holdout.py`),
#: and the hard negatives proposed as candidates stay under 0.77.
CORNER_SHARE = 0.34
#: Depth of the band along one edge left out by `masked_similarity`, as a share of the side.
BAND_SHARE = 0.125


@cache
def _masks() -> NDArray[np.bool_]:
    """Shape (8, side ** 2): the pixels kept when each corner square, then each edge band, is
    left out."""
    side = SIGNATURE_SIDE
    corner, band = round(side * CORNER_SHARE), round(side * BAND_SHARE)
    masks = np.ones((8, side, side), dtype=bool)
    masks[0, :corner, :corner] = False
    masks[1, :corner, -corner:] = False
    masks[2, -corner:, :corner] = False
    masks[3, -corner:, -corner:] = False
    masks[4, :band, :] = False
    masks[5, -band:, :] = False
    masks[6, :, :band] = False
    masks[7, :, -band:] = False
    return masks.reshape(8, side * side)


def masked_similarity(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Best correlation of each row pair with one corner square, or one band along an edge,
    left out.

    Logos and credits are stamped in corners, captions and tickers laid along an edge; leaving
    the stamped part out leaves the picture, and a picture that differs everywhere (another
    view, another region) gains nothing from it.
    """
    best = np.full(len(a), -1.0)
    for keep in _masks():
        x, y = _normalised(a[:, keep]), _normalised(b[:, keep])
        best = np.maximum(best, np.einsum("ij,ij->i", x, y))
    return best


#: Pairs aligned at once (their crop stacks take about 10 MB).
_ALIGN_BATCH = 32


def aligned_similarity(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Best correlation of each row pair over the border crops of either side.

    `a` and `b` are normalised signatures (zero mean, unit norm), shape (pairs, side ** 2).
    """
    rows, cols = _crop_axes()
    side = SIGNATURE_SIDE
    best = np.einsum("ij,ij->i", a, b)
    for start in range(0, len(a), _ALIGN_BATCH):
        part = slice(start, start + _ALIGN_BATCH)
        for x, y in ((a[part], b[part]), (b[part], a[part])):
            images = x.reshape(-1, 1, side, side)
            cropped = (rows[None] @ images @ cols[None].transpose(0, 1, 3, 2)).reshape(
                len(x), len(_CROPS), side * side
            )
            cropped -= cropped.mean(axis=2, keepdims=True)
            cropped /= np.maximum(np.linalg.norm(cropped, axis=2, keepdims=True), 1e-12)
            scores = np.einsum("icq,iq->ic", cropped, y).max(axis=1)
            best[part] = np.maximum(best[part], scores)
    return best
