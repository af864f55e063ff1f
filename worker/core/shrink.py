"""pHash's 32 x 32 Lanczos shrink: Pillow's own 8-bit arithmetic, compiled, bit for bit.

imagehash shrinks with `Image.resize(..., LANCZOS)`, and after the reduced decode that shrink is
the largest cost left on the upload path (about 0.8 ms of a 12 MP JPEG's 19 on one core here).
Pillow computes each output pixel as a scalar dot product; the same integer arithmetic, with the
vertical pass running along contiguous rows, takes about a quarter of the time (`_shrink.c`, a C
extension built with the package). The output must stay bit for bit Pillow's, or hashes would
drift from imagehash's for no gain in quality, so the extension follows Pillow's fixed-point
rules exactly:

- Coefficients: Lanczos-3 widened by the scale, normalised to sum 1, then rounded to 22-bit
  fixed point; each pass rounds and clips to 8 bits.
- Pass order: horizontal first, except for images at least about twice as tall as wide
  (`2 * width <= height + 31` for a 32 x 32 output), which Pillow resamples vertically first.
  Pillow does not document this; it was measured over thousands of random shapes.
- `reducing_gap`: Pillow's integer box reduction first (Pillow's own `reduce`, here too), then
  Lanczos over the reduced image's fractional extent (a float32 box).

Because those rules are read from behaviour, not from a contract, `uses_native()` checks
them against the installed Pillow once per process, and `shrink` falls back to Pillow's own
resize if they ever disagree (say, after a Pillow upgrade), or if the extension was not built
(an installation without a C compiler). The tests fail in both cases.

A C extension rather than a Numba loop, as the search's are: it loads with the module, where
Numba costs a process about a second before its first call, more than a scan of a few hundred
files would save.
"""

from __future__ import annotations

import logging
from functools import cache, lru_cache
from types import ModuleType

import numpy as np
from numpy.typing import NDArray
from PIL import Image

_native: ModuleType | None
try:
    from worker.core import _shrink as _native
except ImportError:  # pragma: no cover - built by every installation with a C compiler
    _native = None

#: pHash's input side (hash_size 8 x highfreq_factor 4).
SIDE = 32

log = logging.getLogger(__name__)


def shrink(gray: Image.Image, reducing_gap: float | None = None) -> NDArray[np.uint8]:
    """`gray.resize((32, 32), LANCZOS, reducing_gap=reducing_gap)` as a 32 x 32 array.

    `gray` is an 8-bit greyscale (`L`) image. Images with a side of 32 or less take Pillow's own
    path (upscales and single-pass resizes are cheap, and rules for them are not needed).
    """
    if gray.mode != "L":
        raise ValueError(f"shrink takes 8-bit greyscale (L) images, not {gray.mode}")
    width, height = gray.size
    if min(width, height) <= SIDE or not uses_native():
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
def uses_native() -> bool:
    """Whether `shrink` runs the C extension rather than Pillow's resize: it is built, and it
    reproduces the installed Pillow's output on probe images of every path (horizontal first,
    vertical first, box-reduced). Checked once per process; False, with a warning, otherwise."""
    if _native is None:
        log.warning(
            "the compiled 32 x 32 shrink (worker.core._shrink) is not built: install with a C "
            "compiler; hashing falls back to Pillow's slower resize"
        )
        return False
    rng = np.random.default_rng(20261130)
    for (width, height), gap in (
        ((577, 433), None),  # wide: horizontal pass first
        ((250, 433), None),  # tall, under twice as tall: still horizontal first
        ((232, 433), None),  # at the boundary: vertical first
        ((96, 400), None),
        # Box-reduced by (9, 6), then a fractional extent. Kept small: a 4 MB probe left the
        # heap fragmented enough to raise a later decode's peak by 3.5 MB, past its reservation.
        ((1155, 866), 4.0),
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


def _lanczos(pixels: NDArray[np.uint8], extent: tuple[float, float]) -> NDArray[np.uint8]:
    """Both Lanczos passes over `pixels` (height x width) whose content spans `extent` (width,
    height; the whole image unless a box reduction rounded its size up)."""
    assert _native is not None
    height, width = pixels.shape
    out = _native.lanczos(
        np.ascontiguousarray(pixels),
        width,
        height,
        _taps(width, extent[0]),
        _taps(height, extent[1]),
    )
    return np.frombuffer(out, np.uint8).reshape(SIDE, SIDE)


@lru_cache(maxsize=1024)
def _taps(size: int, extent: float) -> bytes:
    """The fixed-point taps from `size` pixels to 32, computed once per shape: a scan or an
    upload stream meets the same few camera sizes again and again."""
    assert _native is not None
    return _native.taps(size, extent)
