"""Perceptual hashing of image bytes: the pure core of the upload path.

pHash as imagehash computes it (greyscale, 32 x 32 Lanczos shrink, 2-D DCT, top-left 8 x 8
coefficients compared with their median), applied to the image as a person sees it: EXIF
orientation first, first frame of an animation. No I/O and no global state: bytes in, facts out.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from worker.errors import TooLarge, UnreadableImage

#: Bumped whenever the bits a given image hashes to may change, so stored hashes can be replayed.
HASH_VERSION = 1


@dataclass(frozen=True, slots=True)
class HashedImage:
    """What the store keeps about an image's pixels and bytes."""

    phash: str
    """16 lowercase hex digits, identical to `str(imagehash.phash(image))`."""
    width: int
    """Width after EXIF orientation."""
    height: int
    """Height after EXIF orientation."""
    format: str
    """Pillow's name of the container format, e.g. `JPEG`."""
    sha256: str
    """Checksum of the source bytes: an unchanged re-upload is recognised without decoding."""
    size_bytes: int
    """Length of the source bytes."""


def provenance() -> dict[str, Any]:
    """How hashes are made by this code, stored with each hash so a change can be detected."""
    return {
        "algorithm": "phash",
        "hash_size": 8,
        "highfreq_factor": 4,
        "decoder": "pillow-full",
        "version": HASH_VERSION,
        "imagehash": version("imagehash"),
        "pillow": version("pillow"),
    }


def sha256_hex(data: bytes) -> str:
    """Content checksum used to recognise unchanged bytes."""
    return hashlib.sha256(data).hexdigest()


def hash_image(data: bytes, *, max_pixels: int, sha256: str | None = None) -> HashedImage:
    """Hash `data`, refusing what cannot or must not be decoded.

    Raises `UnreadableImage` for empty, truncated, corrupt or non-image bytes and `TooLarge`
    when the header announces more than `max_pixels` pixels (checked before any pixel is decoded,
    which is what defuses decompression bombs).
    """
    if not data:
        raise UnreadableImage("the source is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(f"image dimensions exceed the decoder's safety limit: {e}") from e
    except UnidentifiedImageError as e:
        raise UnreadableImage("not an image format Pillow can identify") from e
    except Exception as e:  # Pillow raises many types on corrupt headers: all are the file's fault
        raise UnreadableImage(f"corrupt image header: {type(e).__name__}: {e}") from e
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(
                f"{width} x {height} = {width * height} pixels exceeds the limit of {max_pixels}"
            )
        fmt = image.format or "unknown"
        try:
            upright = ImageOps.exif_transpose(image)
            phash = str(imagehash.phash(upright))
            width, height = upright.size
        except Exception as e:  # truncated or corrupt pixel data surfaces here, in many types
            raise UnreadableImage(f"cannot decode {fmt} pixel data: {type(e).__name__}: {e}") from e
    return HashedImage(
        phash=phash,
        width=width,
        height=height,
        format=fmt,
        sha256=sha256 or sha256_hex(data),
        size_bytes=len(data),
    )


def phash_to_signed(phash: str) -> int:
    """The hash as a signed 64-bit integer, the form MongoDB can store and index.

    pHash always sets its top bit (the DC coefficient is above the median), so the unsigned
    value never fits BSON's int64; the two's-complement reading keeps all 64 bits.
    """
    return int.from_bytes(bytes.fromhex(phash), "big", signed=True)


def signed_to_phash(value: int) -> str:
    """Inverse of `phash_to_signed`."""
    return (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big").hex()


def hashes_to_array(phashes: list[str]) -> NDArray[np.uint64]:
    """Hex pHashes as an unsigned 64-bit array, the grouping core's input."""
    return np.array([int(h, 16) for h in phashes], dtype=np.uint64)
