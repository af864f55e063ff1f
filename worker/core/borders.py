"""The picture inside a uniform border: what a frame, a passe-partout or letterboxing surrounds.

A copy with a frame added is another image to every hash of the whole (a 5 % white frame moves
pHash 20-30 bits and shifts every pixel of the 32 x 32 signature), but its content is the
original. So each image's rows and columns of one flat colour are peeled off its edges, and the
matcher also hashes what is left. A photograph whose own edge is flat (sky, a studio backdrop,
the black around a telescope's disc) is trimmed too, which does no harm: its content is
compared with the other picture whole, and with the other's content. Where the outermost border
is even on opposite sides, as an added frame is, only that border is peeled for the hash: a
soft flat edge inside it (the black fading around a disc) ends a few lines off from where the
original's own peel ends, and the whole inside the frame is the original exactly.

Pure: a greyscale array in, a box out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from worker.core.medians import row_medians

#: A line belongs to the border when this share of its pixels is within `TOLERANCE` grey levels
#: of the border's level (the outermost line's median): JPEG ringing and noise leave a few
#: pixels off, a picture's edge many.
FLAT_SHARE = 0.97
TOLERANCE = 12
#: At most this share of a side is peeled: beyond it the image is mostly flat (a low-detail
#: frame, a page), not a picture in a border.
MOST = 0.3
#: A border thinner than this share of the image's larger side is no border (noise, a hairline).
LEAST = 0.01
#: The box is looked for on a copy of about this many pixels on its larger side.
SIDE = 256


Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels."""


@dataclass(frozen=True, slots=True)
class Border:
    """Where the picture is inside an image's uniform borders."""

    picture: Box
    """Inside every border peeled: what the matcher hashes when there is no `frame`."""
    frame: Box | None
    """Inside the outermost border when it is even on opposite sides, as a frame, a mat or
    letterboxing added around a picture is (a photograph's own flat edge, sky or the black
    around a disc, seldom is): the pixels that count as the picture's when originals are
    ranked, and what the matcher hashes (the original as it was before the frame was added).
    None when the outermost border is not so."""


def content_box(pixels: NDArray[np.uint8]) -> Border | None:
    """The picture inside the uniform borders of `pixels` (a greyscale image, rows first, a few
    hundred pixels a side is plenty), or None when there is no border to speak of, or when a
    side is flat as far as `MOST` (a flat image, not a frame).

    Borders are peeled until none is left (a white frame around a photograph whose own top is
    flat sky loses both, as the photograph alone does), and each trimmed side loses one line
    more: the line where border and picture meet is neither, and a copy's box must not come out
    larger than its original's.
    """
    height, width = pixels.shape
    lines = pixels
    left, top, right, bottom = 0, 0, width, height
    frame: Box | None = None
    peeled: Box | None = None  # inside the borders peeled so far, within `MOST`
    for round_ in range(_ROUNDS):
        inside = lines[top:bottom, left:right]
        cuts = (
            _flat_lines(inside.T),
            _flat_lines(inside),
            _flat_lines(inside.T[::-1]),
            _flat_lines(inside[::-1]),
        )
        if not any(cuts):
            break
        cut = [c + 1 if c else 0 for c in cuts]
        left, top, right, bottom = left + cut[0], top + cut[1], right - cut[2], bottom - cut[3]
        if (
            left > MOST * width
            or top > MOST * height
            or width - right > MOST * width
            or height - bottom > MOST * height
        ):
            break  # a frame around a picture with a wide flat side: the frame is the border
        peeled = (left, top, right, bottom)
        if round_ == 0 and _even(cuts[0], cuts[2], width) and _even(cuts[1], cuts[3], height):
            frame = peeled
    if peeled is None:
        return None
    left, top, right, bottom = peeled
    if max(left, top, width - right, height - bottom) < LEAST * max(height, width):
        return None
    return Border(peeled, frame)


def _even(one: int, other: int, side: int) -> bool:
    """Whether two opposite cuts are the same, to a line or a hundredth of the side."""
    return abs(one - other) <= max(1, side // 100)


#: Borders peeled one inside another at most (a frame, a mat, the picture's own flat edge).
_ROUNDS = 3


def _flat_lines(lines: NDArray[np.uint8]) -> int:
    """How many leading lines (rows of `lines`) are flat at the first line's level, up to
    `MOST` of them.

    Most pictures have no border, and their first line is not flat: that one line is all that
    is read then. Otherwise lines are read a block at a time, until one is not flat.
    """
    if len(lines) == 0:
        return 0
    level = int(row_medians(lines[:1])[0])  # np.median's, a sixth of the borders' time less
    limit = max(1, int(MOST * len(lines)))
    done = 0
    for size in (1, *([_BLOCK] * (-(-limit // _BLOCK)))):
        block = lines[done : min(done + size, limit)]
        if len(block) == 0:
            break
        flat = (np.abs(block.astype(np.int16) - level) <= TOLERANCE).mean(axis=1) >= FLAT_SHARE
        if not flat.all():
            return done + int(np.argmin(flat))
        done += len(block)
    return done


#: Lines read at once past the first (see `_flat_lines`).
_BLOCK = 16
