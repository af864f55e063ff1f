"""Perceptual hashing of image bytes: the pure core of the upload path.

pHash as imagehash computes it (greyscale, 32 x 32 Lanczos shrink, 2-D DCT, top-left 8 x 8
coefficients compared with their median), applied to the image as a person sees it: EXIF
orientation first, first frame of an animation, transparency over white, 16-bit scaled to 8.

Decoding dominates the cost, so the decoder is asked for no more pixels than the hash needs
(JPEG's reduced-scale DCT, `Image.draft`, down to `REDUCED_MIN_SIDE`), and the decoded image is
box-reduced (down to `BOX_MIN_SIDE`) before imagehash's Lanczos shrink. That keeps the hash
within a fraction of a bit of imagehash on the fully decoded image (benchmarks/hashing.py
measures the drift and the exact-match recall). No I/O and no global
state: bytes in, facts out.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from worker.core import borders
from worker.core.errors import DupfinderError, TooLarge, UnreadableImage, UnsupportedFormat
from worker.core.fingerprint import CENTRE_BORDER, SIGNATURE_SIDE, Fingerprint, fingerprint
from worker.core.shrink import SIDE, shrink

#: Bumped whenever the bits a given image hashes to may change, so stored hashes can be replayed.
#: 4: the picture inside a uniform border (`borders`) is hashed too; 5: so are the halves;
#: 6: and five wider crops; 7: and one of 5 % off the left and the right, and inside an even
#: outer frame only the frame is peeled.
HASH_VERSION = 7

#: Reduced decoding stops before the image gets smaller than this on either side. Drafting a JPEG
#: straight down to 8 px drifts the hash by about 0.5 bits and costs exact-match recall; from
#: 256 px on, the drift is about 0.3 bits at the same speed (PHASH-FACTS.md).
REDUCED_MIN_SIDE = 256

#: Before the final Lanczos shrink to 32 x 32, images are box-reduced by whole factors to no less
#: than this: the Lanczos pass then reads a few thousand pixels instead of millions.
BOX_MIN_SIDE = 256

#: Transparent pixels are composited onto this grey level before hashing: what a portal shows
#: behind a cut-out, and what a JPEG export of it usually contains.
ALPHA_BACKGROUND = 255

_EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the transposition that turns the stored pixels upright.
_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = frozenset(
    {
        Image.Transpose.TRANSPOSE,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
    }
)

_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

#: Magic numbers of image formats this build cannot decode, so they fail as `unsupported_format`
#: rather than as "unreadable".
_UNSUPPORTED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF", "PDF"),
    (0, b"%!PS", "PostScript/EPS"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML (SVG?)"),
    (0, b"\xff\x0a", "JPEG XL"),
    (4, b"JXL ", "JPEG XL"),
    (4, b"ftypcrx ", "Canon CR3 raw"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"FUJIFILMCCD-RAW", "Fujifilm RAF raw"),
)

try:  # HEIC/HEIF through the maintained pillow-heif plugin, when it is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - the plugin is a declared dependency
    pass


@dataclass(frozen=True, slots=True)
class HashedImage:
    """What the store keeps about an image's pixels and bytes."""

    phash: str
    """16 lowercase hex digits, in imagehash's bit order and text (`str(imagehash.phash(...))`)."""
    width: int
    """Width after EXIF orientation, at full size."""
    height: int
    """Height after EXIF orientation, at full size."""
    format: str
    """Pillow's name of the container format, e.g. `JPEG`."""
    sha256: str
    """Checksum of the source bytes: an unchanged re-upload is recognised without decoding.
    Empty when none was asked for (`hash_image(checksum=False)`)."""
    size_bytes: int
    """Length of the source bytes."""
    decoder: str = "full"
    """How the pixels were obtained: `jpeg-draft` (reduced-scale DCT) or `full`."""
    fingerprint: Fingerprint | None = None
    """What the verified matcher compares (variants, centre hash, signature, detail)."""
    pixels_sha256: str | None = None
    """Checksum of the decoded pixels, for low-detail images only: they match only when
    identical, in bytes or in pixels."""
    picture: int | None = None
    """Pixels inside a uniform border (`borders`), at full size, when the image has one."""

    @property
    def pixels(self) -> int:
        """Pixels of the picture, which rank originals (`ranked_pixels`)."""
        return ranked_pixels(self.width, self.height, self.picture)


#: Ranking originals, a uniform border counts as added (pixels, not picture) only from this
#: share of the area. A photograph's own thin even edge looks like a frame too: the retina's dark
#: rim, 1-1.4 % a side, takes 3.6 % of the area, and its captioned copy, whose band breaks the
#: rim, outranked the photograph it was made from. The benchmarks' added frames (5 % a side)
#: take 17 %.
RANKED_FRAME_FROM = 0.10


def ranked_pixels(width: int, height: int, picture: int | None) -> int:
    """The pixels an image ranks by as an original: those of the picture inside its uniform
    border when the border takes `RANKED_FRAME_FROM` of the area or more (a frame or letterbox
    added to a copy adds pixels but no picture, so it does not make the copy the original), else
    all of them.

    The same function turns a stored count back into a rank, whether it was stored before this
    rule (the picture's own count) or after (already ranked): applying it twice changes nothing.
    """
    whole = width * height
    if picture is None or picture >= whole * (1 - RANKED_FRAME_FROM):
        return whole
    return picture


def provenance(decoder: str = "full") -> dict[str, Any]:
    """How a hash was made, stored with it so that a change of method can be detected."""
    return {
        "algorithm": "phash",
        "hash_size": 8,
        "highfreq_factor": 4,
        "decoder": decoder,
        "reduced_min_side": REDUCED_MIN_SIDE,
        "box_min_side": BOX_MIN_SIDE,
        "alpha_background": ALPHA_BACKGROUND,
        "signature_side": SIGNATURE_SIDE,
        "centre_border": CENTRE_BORDER,
        "version": HASH_VERSION,
        **_library_versions(),
    }


@functools.cache
def _library_versions() -> dict[str, str]:
    """The versions of the libraries a hash depends on, read once: `importlib.metadata` reads
    package metadata from disk at every call, which was a measurable share of an upload's time
    on the worker's event loop (benchmarks/e2e.py, 1 MP JPEGs)."""
    return {"imagehash": version("imagehash"), "pillow": version("pillow")}


def is_current(stored: dict[str, Any] | None) -> bool:
    """Whether a stored hash was made by this code's method (its `version`).

    Any change that can alter the bits of a hash bumps `HASH_VERSION`; library versions are
    recorded for audit but not compared.
    """
    return stored is not None and stored.get("version") == HASH_VERSION


def sha256_hex(data: bytes) -> str:
    """Content checksum used to recognise unchanged bytes."""
    return hashlib.sha256(data).hexdigest()


Admit = Callable[[int], AbstractContextManager[object]]
"""Holds an estimated number of bytes of decode memory for a block (a `DecodeBudget.reserve`)."""


def _admit_all(needed: int) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


#: Conversions that would make a full-size copy in a wide mode (16-bit scaling, alpha over the
#: background) run over bands of rows of about this many bytes, into one greyscale image.
BAND_BYTES = 4 * 1024 * 1024

#: Bytes a pixel takes in Pillow's memory, by mode (RGB is stored in four, like RGBA).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_bytes(mode: str, size: tuple[int, int], *, transposed: bool) -> int:
    """Peak bytes that hashing an image of this decoded mode and size holds (`hash_image`).

    The decoded image, plus the larger of: its greyscale copy and that copy turned upright, or
    (for the pixel checksum of a low-detail image) the decoded image turned upright; plus the
    bands conversions work in and the box reduction's output.
    """
    pixels = size[0] * size[1]
    decoded = pixels * _PIXEL_BYTES.get(mode, 4)
    gray = 0 if mode == "L" else pixels
    hashing = gray + (pixels if transposed else 0)
    checksum = decoded if transposed else 0
    return decoded + max(hashing, checksum) + pixels // 4 + 4 * BAND_BYTES


def hash_image(
    data: bytes,
    *,
    max_pixels: int,
    sha256: str | None = None,
    checksum: bool = True,
    admit: Admit = _admit_all,
) -> HashedImage:
    """Hash `data` as fast as its decoder allows, refusing what cannot or must not be decoded.

    JPEGs are decoded at a reduced DCT scale (never below `REDUCED_MIN_SIDE`), other formats in
    full and box-reduced before the final Lanczos shrink; then greyscale, 32 x 32, DCT and median
    exactly as imagehash does. Raises `UnreadableImage` for empty, truncated, corrupt or non-image
    bytes, `UnsupportedFormat` for image formats this build cannot decode, and `TooLarge` when
    the header announces more than `max_pixels` pixels (checked before any pixel is decoded,
    which is what defuses decompression bombs).

    Every decode runs inside `admit(estimated bytes)` (`decode_bytes`), which may refuse or
    delay it: how a worker keeps its decodes within a memory budget.

    `checksum=False` leaves `sha256` empty (no bytes can equal these: a scan's file whose size
    no other file shares), saving a pass over the bytes that costs 4-5 % of a JPEG's decode.
    """
    if not data:
        raise UnreadableImage("the source is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(f"image dimensions exceed the decoder's safety limit: {e}") from e
    except UnidentifiedImageError as e:
        unsupported = _unsupported_format(data)
        if unsupported:
            raise UnsupportedFormat(f"{unsupported} images cannot be decoded here") from e
        raise UnreadableImage("not an image format Pillow can identify") from e
    except Exception as e:  # Pillow raises many types on corrupt headers: all are the file's fault
        raise UnreadableImage(f"corrupt image header: {type(e).__name__}: {e}") from e
    pixels_sha256 = None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(
                f"{width} x {height} = {width * height} pixels exceeds the limit of {max_pixels}"
            )
        fmt = image.format or "unknown"
        with _decoding(fmt):
            decoder = _reduce_decoding(image)
            guess = _orientation_unloaded(image)
            reserved = decode_bytes(image.mode, image.size, transposed=guess is not None)
            with admit(reserved):
                image.load()
                transpose = _ORIENTATION.get(image.getexif().get(_EXIF_ORIENTATION, 1))
                more = decode_bytes(image.mode, image.size, transposed=transpose is not None)
                with admit(more - reserved) if more > reserved else contextlib.nullcontext():
                    small, content, share = _phash_inputs(image, transpose)
                    prints = fingerprint(small, content)
                    if prints.low_detail and decoder == "full":  # this decode is full-size
                        pixels_sha256 = _pixels_sha256(image, transpose)
            if transpose in _QUARTER_TURNS:
                width, height = height, width
    if prints.low_detail and pixels_sha256 is None:
        with Image.open(io.BytesIO(data)) as full, _decoding(fmt):
            needed = decode_bytes(full.mode, full.size, transposed=transpose is not None)
            with admit(needed):
                pixels_sha256 = _pixels_sha256(full, transpose)
    return HashedImage(
        phash=prints.phash,
        width=width,
        height=height,
        format=fmt,
        sha256=sha256 or (sha256_hex(data) if checksum else ""),
        size_bytes=len(data),
        decoder=decoder,
        fingerprint=prints,
        pixels_sha256=pixels_sha256,
        picture=round(width * height * share) if share < 1 else None,
    )


@contextlib.contextmanager
def _decoding(fmt: str) -> Iterator[None]:
    """Sort what decoding raises: ours pass through, Pillow's many types become the file's."""
    try:
        yield
    except DupfinderError:
        raise
    except OSError as e:
        if "ghostscript" in str(e).lower():
            raise UnsupportedFormat(f"{fmt} needs Ghostscript, which is not installed") from e
        raise UnreadableImage(f"cannot decode {fmt} pixel data: {e}") from e
    except Exception as e:  # truncated or corrupt pixel data surfaces here, in many types
        raise UnreadableImage(f"cannot decode {fmt} pixel data: {type(e).__name__}: {e}") from e


def _bands(size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Boxes of whole rows, about `BAND_BYTES` each at four bytes a pixel, top to bottom."""
    width, height = size
    rows = max(1, BAND_BYTES // (4 * max(width, 1)))
    for top in range(0, height, rows):
        yield 0, top, width, min(height, top + rows)


def _pixels_sha256(image: Image.Image, transpose: Image.Transpose | None) -> str:
    """Checksum of the full-size, upright RGB pixels and their size.

    Paid only for low-detail images, whose hashes cannot tell them apart, so identical pixels
    are the only evidence left. The RGB rows are made and digested a band at a time, never as
    one full-size copy.
    """
    upright = image if transpose is None else image.transpose(transpose)
    digest = hashlib.sha256(f"{upright.width}x{upright.height}:".encode())
    for box in _bands(upright.size):
        digest.update(upright.crop(box).convert("RGB").tobytes())
    return digest.hexdigest()


def _orientation_unloaded(image: Image.Image) -> Image.Transpose | None:
    """The EXIF orientation's transposition, as far as it is known before any pixel is decoded.

    Pillow decodes a whole PNG to look for EXIF data after the pixels, so a PNG without EXIF
    ahead of them is taken as upright until it has been decoded (inside its reservation).
    """
    if image.format == "PNG" and "exif" not in image.info:
        return None
    return _ORIENTATION.get(image.getexif().get(_EXIF_ORIENTATION, 1))


def _reduce_decoding(image: Image.Image) -> str:
    """Ask the decoder for fewer pixels where it can deliver them cheaply (JPEG's scaled DCT)."""
    if image.format != "JPEG":
        return "full"
    # libjpeg picks the smallest of 1/1, 1/2, 1/4, 1/8 that keeps both sides >= the target, and
    # for colour JPEGs can hand out its luma channel directly instead of converting RGB back.
    image.draft("L" if image.mode in ("RGB", "L") else image.mode, (REDUCED_MIN_SIDE,) * 2)
    return "jpeg-draft"


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def _to_gray(image: Image.Image) -> Image.Image:
    """The image in greyscale as imagehash sees it, with at most one full-size copy (the
    greyscale image itself): 16-bit scaling and alpha compositing go band by band.

    16-bit greyscale would be clipped to white by a plain conversion, so it is scaled to 8 bits
    first; transparent pixels are composited over `ALPHA_BACKGROUND`. Both are pointwise, so
    the bands give the bits of the whole.
    """
    if image.mode == "L":
        return image
    high_bit, alpha = image.mode in _HIGH_BIT_MODES, _has_alpha(image)
    if not (high_bit or alpha):
        return image.convert("L")
    gray = Image.new("L", image.size)
    for box in _bands(image.size):
        band = image.crop(box)
        if high_bit:
            band = band.convert("I").point(lambda value: value * (1 / 256))
        if alpha:
            rgba = band.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
            band = Image.alpha_composite(background, rgba)
        gray.paste(band.convert("L"), box[:2])
    return gray


def _phash_inputs(
    image: Image.Image, transpose: Image.Transpose | None
) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None, float]:
    """The 32 x 32 greyscale image imagehash's pHash transforms, reached cheaply; the same of
    the picture inside a uniform border, when it has one (`borders.content_box`), and the share
    of the area that picture takes.

    The EXIF orientation is applied to the greyscale image (a pointwise conversion commutes with
    a transposition, so the bits equal those of the upright colour image, without a full-size
    colour copy). Large images are then shrunk by an integer box filter to no less than
    `BOX_MIN_SIDE` (Pillow's `reducing_gap`) and Lanczos-resampled exactly as imagehash does,
    by Pillow's arithmetic compiled (`shrink`).
    """
    gray = _to_gray(image)
    if transpose is not None:
        gray = gray.transpose(transpose)
    border = _border(gray)
    if border is None:
        return _shrunk(gray), None, 1.0
    share = 1.0
    if border.frame is not None:
        left, top, right, bottom = border.frame
        share = (right - left) * (bottom - top) / (gray.width * gray.height)
    # Inside an even outer border (a frame, a mat, letterboxing added around a picture), that
    # border alone is peeled: what it surrounds is the original as it was, where peeling on
    # into the picture's own soft flat edge (the black around a disc) lands a few lines off
    # from where the original's own peel does.
    inside = border.frame if border.frame is not None else border.picture
    return _shrunk(gray), _shrunk(gray.crop(inside)), share


def _shrunk(gray: Image.Image) -> NDArray[np.uint8]:
    if min(gray.size) < 2 * BOX_MIN_SIDE:  # nothing to gain: resample exactly as imagehash
        return shrink(gray)
    # reducing_gap = g: box-reduce by whole factors while at least 32 * g pixels remain.
    return shrink(gray, reducing_gap=BOX_MIN_SIDE / SIDE)


def _border(gray: Image.Image) -> borders.Border | None:
    """`borders.content_box` looked for on a box-reduced copy of at most about
    `borders.SIDE` pixels a side, in `gray`'s pixels."""
    width, height = gray.size
    step = max(1, max(width, height) // borders.SIDE)
    probe = gray.reduce(step) if step > 1 else gray
    found = borders.content_box(np.asarray(probe, dtype=np.uint8))
    if found is None:
        return None
    sx, sy = width / probe.width, height / probe.height

    def scaled(box: borders.Box) -> borders.Box:
        left, top, right, bottom = box
        return round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)

    return borders.Border(
        scaled(found.picture), None if found.frame is None else scaled(found.frame)
    )


def _unsupported_format(data: bytes) -> str | None:
    head = data[:64]
    for offset, magic, name in _UNSUPPORTED_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def phash_to_signed(phash: str) -> int:
    """The hash as a signed 64-bit integer, the form MongoDB can store and index.

    pHash always sets its top bit (the DC coefficient is above the median), so the unsigned
    value never fits BSON's int64; the two's-complement reading keeps all 64 bits.
    """
    return int.from_bytes(bytes.fromhex(phash), "big", signed=True)


def signed_to_phash(value: int) -> str:
    """Inverse of `phash_to_signed`."""
    return (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big").hex()
