"""What the matcher keeps about an image's pixels, all derived from pHash's 32 x 32 input.

One decode and one 32 x 32 greyscale shrink feed everything here, so the verified matcher costs
the upload path a few hundred microseconds and no second decode:

- `phash`: imagehash's pHash (same DCT, median and bit order).
- `variants`: the pHash the mirrored and the 90/180/270-degree rotated image would have. A flip
  of the pixels only flips the sign of the odd DCT coefficients along that axis, and a quarter
  turn transposes the coefficients, so these come from the same 8 x 8 block with signs changed.
- `centre`: pHash of the middle of the picture (a 15 % border dropped on every side): a small
  border crop or a logo in a corner moves it far less than the full hash, so it widens the net
  for candidates without widening the radius.
- `crops`: the pHash the picture would have with 4 % trimmed off one side, two adjacent sides
  or all round (nine ways). A copy with its borders trimmed lands within a few bits of one of
  them, where its own pHash may be 18 bits away; small radii over nine hashes cost far less to
  search than one large radius.
- `signature`: the 32 x 32 shrink itself, 1024 grey levels (1 KiB), compared by
  `verify` after candidates are found; a pHash only says two images are near, this says whether
  they are the same picture.
- `detail`: how much the picture varies once a smooth ramp is taken out (grey levels). Flat,
  near-black and gradient frames have almost none; their hashes are noise, so they are matched
  only when identical.
- `halves`: the pHash of the top, bottom, left and right half of the picture. A logo stamped in
  a corner, or a band across one edge, leaves two or three of them as they were, where it moves
  every hash of the whole and the centre's.
- `content_phash`, `content_signature`: the pHash and the 32 x 32 of the picture inside a
  uniform border (`borders`: a frame, a passe-partout, letterboxing), for images that have one.
  A framed copy's picture is its original whole. Kept beside the whole image's fields, not
  instead of them: a picture's own flat edge (sky, the black around a telescope's disc) is
  peeled too, and where it fades out the box moves with every re-encoding, so the whole image
  stays the steadier description of everything that has no frame added.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from worker.core.dct import dct2
from worker.core.medians import row_medians

#: Side of the stored signature: pHash's own 32 x 32 input, 1 KiB. At 16 x 16 a stereo pair of
#: one scene lines up as well as a 3 % crop does (benchmarks/quality.py); at 32 x 32 it does not.
SIGNATURE_SIDE = 32
#: Share of the side dropped on every border for the centre hash.
CENTRE_BORDER = 0.15
#: Share of the side trimmed for the crop hashes, and which sides: (left, top, right, bottom).
CROP_SHARE = 0.04
CROPS: tuple[tuple[int, int, int, int], ...] = (
    (1, 0, 0, 0),
    (0, 1, 0, 0),
    (0, 0, 1, 0),
    (0, 0, 0, 1),
    (1, 1, 0, 0),
    (0, 1, 1, 0),
    (0, 0, 1, 1),
    (1, 0, 0, 1),
    (1, 1, 1, 1),
)
#: Wider crops, as (left, top, right, bottom) shares trimmed: 8 % off two adjacent sides, 4 %
#: all round, and 5 % off the left and the right (a narrower aspect cut from a wide picture:
#: trims of one side or of adjacent sides leave its pHash 4-8 bits from the original's where this
#: one leaves 0-2, measured on the tuning half of `benchmarks/holdout.py`); their hashes follow
#: the nine of `CROPS` in `Fingerprint.crops`.
WIDE_CROPS: tuple[tuple[float, float, float, float], ...] = (
    (0.08, 0.08, 0.0, 0.0),
    (0.0, 0.08, 0.08, 0.0),
    (0.0, 0.0, 0.08, 0.08),
    (0.08, 0.0, 0.0, 0.08),
    (0.04, 0.04, 0.04, 0.04),
    (0.05, 0.0, 0.05, 0.0),
)
#: Crop hashes an asset has: `CROPS`, then `WIDE_CROPS`.
CROP_COUNT = len(CROPS) + len(WIDE_CROPS)
#: The halves hashed, as (left, top, right, bottom) shares trimmed: top, bottom, left, right.
HALVES: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.5),
    (0.0, 0.5, 0.0, 0.0),
    (0.0, 0.0, 0.5, 0.0),
    (0.5, 0.0, 0.0, 0.0),
)
#: Below this residual standard deviation (grey levels, 32 x 32, after removing a plane) an image
#: is `low_detail`. Flat and gradient frames measure under 1; the least detailed photograph of
#: the quality benchmark (a moon at contrast x0.7) measures about 8.
LOW_DETAIL_BELOW = 2.0

#: Order of `Fingerprint.variants`, with the kind of match each one reveals.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("mirror", "mirrored"),
    ("rot90", "rotated"),
    ("rot180", "rotated"),
    ("rot270", "rotated"),
)

_U = np.arange(8)[:, None]
_V = np.arange(8)[None, :]
_ODD_ROWS = np.where(_U % 2 == 1, -1.0, 1.0) * np.ones((1, 8))
_ODD_COLUMNS = np.where(_V % 2 == 1, -1.0, 1.0) * np.ones((8, 1))


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Everything the matcher needs about one image's pixels."""

    phash: str
    variants: tuple[str, str, str, str]
    """pHash of the image mirrored left-right, turned 90 (counter-clockwise), 180 and 270."""
    centre: str
    crops: tuple[str, ...]
    """pHashes of the picture trimmed as `CROPS` lists (4 % per trimmed side, half of that all
    round), then as `WIDE_CROPS` lists."""
    signature: bytes
    detail: float
    halves: tuple[str, str, str, str] = ("", "", "", "")
    """pHashes of the top, bottom, left and right half (`HALVES`)."""
    content_phash: str | None = None
    """pHash of the picture inside a uniform border; None when the image has no border (or
    the picture too little detail to trust its hash)."""
    content_signature: bytes | None = None
    """The 32 x 32 of the picture inside the border, as `signature` is of the whole."""

    @property
    def low_detail(self) -> bool:
        return self.detail < LOW_DETAIL_BELOW


def fingerprint(small: NDArray[np.uint8], content: NDArray[np.uint8] | None = None) -> Fingerprint:
    """The fingerprint of a 32 x 32 greyscale image (pHash's input, as `hashing` makes it), and
    given the 32 x 32 of the picture inside its uniform border, that picture's hash too."""
    pixels = small.astype(np.float64)
    low = dct2(pixels)[:8, :8]
    turns = np.stack(
        (
            low,
            low * _ODD_COLUMNS,  # mirror: x -> -x flips odd horizontal frequencies
            low.T * _ODD_ROWS,  # quarter turn counter-clockwise: transpose, flip rows
            low * _ODD_ROWS * _ODD_COLUMNS,
            low.T * _ODD_COLUMNS,
        )
    )
    blocks = [turns, _trimmed_lows(pixels)]  # then the centre and the crops
    detail = detail_of(pixels)
    # A flat picture in a frame has a hash of noise: it is described whole, frame and all.
    inside = content.astype(np.float64) if content is not None else None
    framed = inside is not None and min(detail, detail_of(inside)) >= LOW_DETAIL_BELOW
    if framed:
        assert content is not None and inside is not None
        blocks.append(dct2(inside)[None, :8, :8])
    texts = _hex_hashes(np.concatenate(blocks))
    halves = 6 + CROP_COUNT  # after the whole, its four turns, the centre and the crops
    return Fingerprint(
        phash=texts[0],
        variants=(texts[1], texts[2], texts[3], texts[4]),
        centre=texts[5],
        crops=tuple(texts[6:halves]),
        signature=small.tobytes(),
        detail=detail,
        halves=(texts[halves], texts[halves + 1], texts[halves + 2], texts[halves + 3]),
        content_phash=texts[halves + 4] if framed else None,
        content_signature=content.tobytes() if framed and content is not None else None,
    )


def detail_of(pixels: NDArray[np.float64]) -> float:
    """Residual standard deviation after the best-fitting plane: 0 for flat and ramped frames."""
    design, solve = _plane(pixels.shape)
    values = pixels.ravel()
    return float(np.std(values - design @ (solve @ values)))


@cache
def _plane(shape: tuple[int, ...]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The design matrix of a plane over `shape` and its least-squares solver (pseudo-inverse)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    design = np.column_stack((np.ones(h * w), x.ravel(), y.ravel())).astype(np.float64)
    return design, np.asarray(np.linalg.pinv(design), dtype=np.float64)


def _hex_hashes(blocks: NDArray[np.float64]) -> list[str]:
    """Hex text of `block > median(block)` for each 8 x 8 block, in imagehash's order (row-major,
    first bit highest). All blocks in one pass: an image has fifteen, and per-block NumPy calls
    cost more than the arithmetic."""
    values = blocks.reshape(len(blocks), -1)
    text = np.packbits(values > row_medians(values)[:, None], axis=1).tobytes().hex()
    width = 2 * values.shape[1] // 8
    return [text[k : k + width] for k in range(0, len(text), width)]


def trim_matrix(side: int, low: float, high: float) -> NDArray[np.float64]:
    """Pillow's bilinear resize of a line of `side` pixels with shares `low` and `high` trimmed
    off its ends, back to `side` pixels, as a matrix (taken from Pillow itself, one unit vector
    at a time). Bilinear resampling is separable, so a trim of an image is `rows @ X @ cols.T`.

    The unit vectors go through Pillow as the rows of one identity image: a resize that keeps
    the height resamples each row on its own, so one call gives every column of the matrix (a
    call per vector cost a scan's start-up a third of a second).
    """
    units = Image.fromarray(np.eye(side, dtype=np.float32), "F")
    lines = units.resize(
        (side, side), Image.Resampling.BILINEAR, box=(side * low, 0, side * (1 - high), side)
    )
    return np.asarray(lines, dtype=np.float64).T


def crop_shares() -> list[tuple[float, float, float, float]]:
    """(left, top, right, bottom) shares trimmed for each crop hash, in `Fingerprint.crops`
    order: where a copy proposed by one of them lines up with its original."""
    return _trims()[1 : 1 + CROP_COUNT]


def _trims() -> list[tuple[float, float, float, float]]:
    """(left, top, right, bottom) shares of the centre hash, of every crop hash, then of the
    halves."""
    border = CENTRE_BORDER
    trims = [(border, border, border, border)]
    for sides in CROPS:
        share = CROP_SHARE / 2 if all(sides) else CROP_SHARE
        left, top, right, bottom = (share * side for side in sides)
        trims.append((left, top, right, bottom))
    return trims + list(WIDE_CROPS) + list(HALVES)


@cache
def _trim_operators() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per trim, the 8 x 32 matrices that map a 32 x 32 image straight to the low 8 x 8 DCT
    block of its trimmed and resized self: `rows @ X @ cols.T`."""
    n = SIGNATURE_SIDE
    k = np.arange(8)[:, None]
    x = np.arange(n)[None, :]
    dct = 2 * np.cos(np.pi * k * (2 * x + 1) / (2 * n))  # scipy.fftpack's DCT-II, first 8 rows
    rows = np.stack([dct @ trim_matrix(n, top, bottom) for _, top, _, bottom in _trims()])
    cols = np.stack([dct @ trim_matrix(n, left, right) for left, _, right, _ in _trims()])
    return rows, cols


def _trimmed_lows(pixels: NDArray[np.float64]) -> NDArray[np.float64]:
    """The low 8 x 8 DCT block of the centre trim, of every crop trim and of the halves, shape
    (19, 8, 8)."""
    rows, cols = _trim_operators()
    return np.asarray(rows @ pixels @ cols.transpose(0, 2, 1))
