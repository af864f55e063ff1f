"""Deterministic test images: photo-like pictures and the copies people make of them.

Pictures are smooth random fields with a few hard-edged shapes, so that their pHashes spread like
those of photographs (different seeds land about 32 bits apart) and resizing or re-compressing a
picture leaves its hash (nearly) unchanged.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def sample_photo(name: str) -> Image.Image:
    """One of scikit-image's sample photographs (the `test` extra installs it), in RGB."""
    from benchmarks.corpus import package_file

    path = package_file("skimage", "data", name)
    assert path is not None, f"scikit-image has no {name}"
    with Image.open(path) as image:
        return image.convert("RGB")


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like RGB picture, the same for the same seed."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        x1 = x0 + int(rng.integers(width // 10, width // 3 + 1))
        y1 = y0 + int(rng.integers(height // 10, height // 3 + 1))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """The image's bytes in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path: Path, image: Image.Image, fmt: str = "PNG", **options: object) -> Path:
    """Save the image at `path` and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, fmt, **options))
    return path


def with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    """JPEG bytes of `image` stored rotated, with the EXIF tag that turns it upright again.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the
    upright picture turned 90 degrees counter-clockwise.
    """
    stored = {6: image.transpose(Image.Transpose.ROTATE_90), 3: image.rotate(180)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


#: What the retina (1411 x 1411) was stored with before originals ranked a thin rim as picture:
#: the pixels inside its rim only (the rim takes 1-1.4 % a side).
RETINA_INSIDE_PIXELS = round(1411 * 1411 * 0.96)


def retina_and_its_captioned_copy(folder: Path) -> tuple[Path, Path]:
    """The retina photograph, whose own dark rim is an even border like an added frame, and a
    copy with a caption band across the bottom (which breaks the rim), as JPEGs in `folder`."""
    from benchmarks.holdout import _captioned

    retina = sample_photo("retina.jpg")
    return (
        write(folder / "retina.jpg", retina, "JPEG", quality=92),
        write(folder / "captioned.jpg", _captioned(retina), "JPEG", quality=92),
    )
