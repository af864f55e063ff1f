"""pHash's 32 x 32 Lanczos shrink: Pillow's own 8-bit arithmetic, compiled, bit for bit.

imagehash shrinks with `Image.resize(..., LANCZOS)`, and after the reduced decode that shrink is
the largest cost left on the upload path (about 1.3 ms of a 1 MP JPEG's 5). Pillow computes each
output pixel as a scalar dot product; the same integer arithmetic, arranged so that the inner
loop runs along contiguous memory, is about four times faster. The output must stay bit for bit
Pillow's, or hashes would drift from imagehash's for no gain in quality, so this module follows
Pillow 13's fixed-point rules exactly:

- Coefficients: Lanczos-3 widened by the scale, normalised to sum 1, then rounded to 22-bit
  fixed point; each pass rounds and clips to 8 bits.
- Pass order: horizontal first, except for images at least about twice as tall as wide
  (`2 * width <= height + 31` for a 32 x 32 output), which Pillow resamples vertically first.
  Pillow does not document this; it was measured over thousands of random shapes.
- `reducing_gap`: Pillow's integer box reduction first, then Lanczos over the reduced image's
  fractional extent (a float32 box).

Because those rules are read from behaviour, not from a contract, `agrees_with_pillow()` checks
them against the installed Pillow once per process, and `shrink` falls back to Pillow's own
resize if they ever disagree (say, after a Pillow upgrade). The tests fail in that case too.

The compiled loops save about 0.9 ms an image but cost a process about a second to load (Numba,
see `compiled`), so `shrink` uses Pillow's resize, with the same bits, until a process asks for
them with `compile_ahead()`: the worker at start, a scan of enough files.
"""

from __future__ import annotations

import logging
import math
from functools import cache, lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from worker.core.compiled import compiled

#: pHash's input side (hash_size 8 x highfreq_factor 4).
SIDE = 32

#: Pillow's fixed point for 8-bit resampling: 32 bits less 8 for the pixel and 2 for overshoot.
_PRECISION_BITS = 22
_HALF = 1 << (_PRECISION_BITS - 1)
_LANCZOS_SUPPORT = 3.0

log = logging.getLogger(__name__)


def shrink(gray: Image.Image, reducing_gap: float | None = None) -> NDArray[np.uint8]:
    """`gray.resize((32, 32), LANCZOS, reducing_gap=reducing_gap)` as a 32 x 32 array.

    `gray` is an 8-bit greyscale (`L`) image. Images with a side of 32 or less take Pillow's own
    path (upscales and single-pass resizes are cheap, and rules for them are not needed).
    """
    if gray.mode != "L":
        raise ValueError(f"shrink takes 8-bit greyscale (L) images, not {gray.mode}")
    width, height = gray.size
    if min(width, height) <= SIDE or not (_compiled and agrees_with_pillow()):
        resized = gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
        return np.asarray(resized, dtype=np.uint8)
    return _lanczos(*_box_reduced(gray, reducing_gap))


def _box_reduced(
    gray: Image.Image, reducing_gap: float | None
) -> tuple[NDArray[np.uint8], tuple[float, float]]:
    """Pillow's resize up to its Lanczos passes: box-reduce by whole factors while
    `reducing_gap` x 32 pixels remain. The pixels, and the extent (width, height) their content
    spans in them, fractional when a factor does not divide the side."""
    width, height = gray.size
    if reducing_gap is not None:
        factors = (int(width / SIDE / reducing_gap) or 1, int(height / SIDE / reducing_gap) or 1)
        if factors != (1, 1):
            reduced = gray.reduce(factors)
            extent = (width / factors[0], height / factors[1])
            return np.asarray(reduced, dtype=np.uint8), extent
    return np.asarray(gray, dtype=np.uint8), (float(width), float(height))


@cache
def agrees_with_pillow() -> bool:
    """Whether this module reproduces the installed Pillow's output on probe images of every
    path (horizontal first, vertical first, box-reduced). Checked once per process."""
    rng = np.random.default_rng(20261130)
    for (width, height), gap in (
        ((577, 433), None),  # wide: horizontal pass first
        ((250, 433), None),  # tall, under twice as tall: still horizontal first
        ((232, 433), None),  # at the boundary: vertical first
        ((96, 400), None),
        ((2309, 1732), 8.0),  # box-reduced by (9, 6), then a fractional extent
    ):
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
        pillow = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.LANCZOS, None, gap))
        ours = _lanczos(*_box_reduced(image, gap))
        if not np.array_equal(ours, pillow):
            log.warning(
                "the compiled 32 x 32 shrink differs from this Pillow's (%s) on a %d x %d probe; "
                "hashing falls back to Pillow's slower resize",
                Image.__version__,
                width,
                height,
            )
            return False
    return True


#: Whether `shrink` runs the compiled loops (see the module's docstring): set by `compile_ahead`.
_compiled = False


def compile_ahead() -> None:
    """Load or compile the shrink's loops, check them against Pillow, and use them if they agree."""
    global _compiled
    _compiled = agrees_with_pillow()


def uses_compiled() -> bool:
    """Whether `shrink` runs the compiled loops rather than Pillow's resize."""
    return _compiled


def _lanczos(pixels: NDArray[np.uint8], extent: tuple[float, float]) -> NDArray[np.uint8]:
    """Two Lanczos passes over `pixels` (height x width) whose content spans `extent` (width,
    height; the whole image unless a box reduction rounded its size up)."""
    height, width = pixels.shape
    across = _coefficients(width, extent[0])
    down = _coefficients(height, extent[1])
    # Each pass runs along contiguous rows, so the second one reads the first's output
    # transposed. Vertically first (Pillow's order for tall images): the rows of the image.
    if 2 * width <= height + SIDE - 1:
        columns = _rows_pass(pixels, *down)
        return np.ascontiguousarray(_rows_pass(np.ascontiguousarray(columns.T), *across).T)
    # Horizontally first, over the rows the vertical pass will read, transposed.
    weights, bounds = down
    first, last = int(bounds[0, 0]), int(bounds[-1, 0] + bounds[-1, 1])
    rows = _rows_pass(np.ascontiguousarray(pixels[first:last].T), *across)
    shifted = bounds.copy()
    shifted[:, 0] -= first
    return _rows_pass(np.ascontiguousarray(rows.T), weights, shifted)


@lru_cache(maxsize=1024)
def _coefficients(size: int, extent: float) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Pillow's fixed-point Lanczos taps from `size` input pixels (content spanning `extent`,
    held as float32 as Pillow holds its box) to 32, and each output's first tap and tap count."""
    return _taps(size, float(np.float32(extent)))


@compiled
def _taps(size: int, extent: float) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    scale = extent / SIDE
    filter_scale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filter_scale
    taps = math.ceil(support) * 2 + 1
    weights = np.zeros((SIDE, taps), np.int32)
    bounds = np.zeros((SIDE, 2), np.int32)
    raw = np.zeros(taps)
    for out in range(SIDE):
        centre = (out + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), size) - low
        total = 0.0
        for t in range(count):
            raw[t] = _lanczos3((t + low - centre + 0.5) / filter_scale)
            total += raw[t]
        for t in range(count):
            w = raw[t] / total if total != 0.0 else raw[t]
            w *= 1 << _PRECISION_BITS
            weights[out, t] = int(w - 0.5) if w < 0 else int(w + 0.5)
        bounds[out, 0] = low
        bounds[out, 1] = count
    return weights, bounds


@compiled
def _lanczos3(x: float) -> float:
    if not -_LANCZOS_SUPPORT <= x < _LANCZOS_SUPPORT:
        return 0.0
    return _sinc(x) * _sinc(x / _LANCZOS_SUPPORT)


@compiled
def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


@compiled
def _clip8(total: int) -> int:
    value = total >> _PRECISION_BITS
    return 0 if value < 0 else 255 if value > 255 else value


@compiled
def _rows_pass(
    source: NDArray[np.uint8], weights: NDArray[np.int32], bounds: NDArray[np.int32]
) -> NDArray[np.uint8]:
    """Row i of the result is clip8(sum over taps t of weights[i, t] * source[bounds[i, 0] + t]),
    a whole row at a time, so the innermost loop is a vectorised multiply-add along the row.

    The 32-bit accumulator is Pillow's; its sums never overflow (that is what the two spare
    bits of its precision are for), so 32-bit lanes give exactly Pillow's totals.
    """
    width = source.shape[1]
    out = np.empty((weights.shape[0], width), np.uint8)
    total = np.empty(width, np.int32)
    for i in range(weights.shape[0]):
        first = bounds[i, 0]
        total[:] = _HALF
        for t in range(bounds[i, 1]):
            weight = weights[i, t]
            row = source[first + t]
            for x in range(width):
                total[x] = np.int32(total[x] + np.int32(row[x]) * weight)
        for x in range(width):
            out[i, x] = _clip8(total[x])
    return out
