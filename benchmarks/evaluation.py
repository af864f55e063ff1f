"""The evaluation set of the quality benchmark: real photographs, the copies people make of them,
and the images a matcher must keep apart.

Every image is a file as a portal would receive it (encoded bytes), tagged with its family (the
photo it comes from) and its kind of copy. Two images are a true duplicate pair exactly when they
share a family. Families without copies are the hard negatives: regions cut from one large photo,
the other half of a stereo pair, textures, and near-uniform or low-detail frames.

Everything comes from PyPI wheels (scikit-image, scikit-learn, matplotlib): no download.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from benchmarks.corpus import camera_like, package_file, photos

#: Kinds of copy, in the order the benchmark prints them.
KINDS: tuple[str, ...] = (
    "byte",
    "lossless",
    "recompressed",
    "resized",
    "brightened",
    "contrast",
    "greyscale",
    "mirrored",
    "rotated",
    "cropped",
    "watermarked",
)


#: Large photos cut into regions (hard negatives) rather than copied.
_REGION_SOURCES: dict[str, tuple[str, str, str]] = {
    "hubble_deep_field.jpg": ("skimage", "data", "hubble_deep_field.jpg"),
    "retina.jpg": ("skimage", "data", "retina.jpg"),
    "china.jpg": ("sklearn", "datasets/images", "china.jpg"),
}


@dataclass(frozen=True)
class Sample:
    """One file of the evaluation set."""

    name: str
    family: str
    kind: str
    """`original` for the photo a family starts from, `negative` for a hard negative."""
    data: bytes


def _encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 92)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _cropped(
    image: Image.Image, left: float, top: float, right: float, bottom: float
) -> Image.Image:
    w, h = image.size
    return image.crop(
        (round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))
    )


def _logo() -> Image.Image:
    path = package_file("skimage", "data", "logo.png")
    if path is None:
        raise SystemExit("no sample photos: pip install -e '.[bench]'")
    with Image.open(path) as logo:
        return logo.convert("RGBA")


def _watermarked(image: Image.Image, corner: str, share: float, logo: Image.Image) -> Image.Image:
    """A logo across `share` of the width in a corner, as stock sites and agencies stamp them."""
    marked = image.convert("RGBA")
    width = max(8, round(image.width * share))
    stamp = logo.resize((width, max(4, round(logo.height * width / logo.width))))
    margin = round(image.width * 0.02)
    x = margin if "left" in corner else image.width - stamp.width - margin
    y = margin if "top" in corner else image.height - stamp.height - margin
    marked.alpha_composite(stamp, (x, y))
    draw = ImageDraw.Draw(marked)
    draw.text((x, y + stamp.height), "(c) dupfinder", fill=(255, 255, 255, 200))
    return marked.convert("RGB")


def _copies(photo: Image.Image, original: bytes, logo: Image.Image) -> list[tuple[str, str, bytes]]:
    """(kind, detail, bytes) of every copy made of one photo."""
    enhance: Callable[[type, float], Image.Image] = lambda cls, f: cls(photo).enhance(f)  # noqa: E731
    copies: list[tuple[str, str, bytes]] = [
        ("byte", "same bytes", original),
        ("lossless", "PNG re-save", _encode(photo, "PNG")),
        ("lossless", "TIFF re-save", _encode(photo, "TIFF")),
    ]
    copies += [("recompressed", f"JPEG q{q}", _encode(photo, quality=q)) for q in (85, 70, 50)]
    copies += [("recompressed", "WebP q80", _encode(photo, "WEBP", quality=80))]
    copies += [("resized", f"{f:.0%}", _encode(_scaled(photo, f))) for f in (0.75, 0.5, 0.25)]
    copies += [
        ("brightened", f"brightness x{f}", _encode(enhance(ImageEnhance.Brightness, f)))
        for f in (1.2, 0.8)
    ]
    copies += [
        ("contrast", f"contrast x{f}", _encode(enhance(ImageEnhance.Contrast, f)))
        for f in (1.3, 0.7)
    ]
    copies += [("greyscale", "greyscale", _encode(photo.convert("L")))]
    copies += [
        ("mirrored", "left-right", _encode(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    ]
    copies += [
        ("rotated", f"{angle} deg", _encode(photo.transpose(turn)))
        for angle, turn in (
            (90, Image.Transpose.ROTATE_90),
            (180, Image.Transpose.ROTATE_180),
            (270, Image.Transpose.ROTATE_270),
        )
    ]
    copies += [
        ("cropped", "2% each side", _encode(_cropped(photo, 0.02, 0.02, 0.02, 0.02))),
        ("cropped", "5% top and left", _encode(_cropped(photo, 0.05, 0.05, 0, 0))),
        ("cropped", "5% bottom", _encode(_cropped(photo, 0, 0, 0, 0.05))),
        ("cropped", "3% right", _encode(_cropped(photo, 0, 0, 0.03, 0))),
    ]
    copies += [
        ("watermarked", f"logo {corner}", _encode(_watermarked(photo, corner, 0.15, logo)))
        for corner in ("bottom-right", "top-left")
    ]
    return copies


def _regions(photo: Image.Image, name: str) -> list[Sample]:
    """Four quadrants and a centre cut from one photo: different assets of one shoot."""
    w, h = photo.size
    boxes = {
        "top-left": (0, 0, w // 2, h // 2),
        "top-right": (w // 2, 0, w, h // 2),
        "bottom-left": (0, h // 2, w // 2, h),
        "bottom-right": (w // 2, h // 2, w, h),
        "centre": (w // 4, h // 4, 3 * w // 4, 3 * h // 4),
    }
    return [
        Sample(f"{name} {where}", f"{name} {where}", "negative", _encode(photo.crop(box)))
        for where, box in boxes.items()
    ]


def _low_detail(seed: int) -> list[Sample]:
    """Near-uniform, near-black and smooth frames: pHash sees only noise in them."""
    rng = np.random.default_rng(seed)
    images: dict[str, np.ndarray] = {}
    for level in (4, 12, 128, 250):
        for noise in (0.5, 2.0):
            flat = level + rng.normal(0, noise, (300, 400, 3))
            images[f"flat {level} noise {noise}"] = flat
    ramp = np.linspace(0, 1, 400)[None, :, None] * np.ones((300, 1, 3))
    images["gradient dark"] = 10 + 20 * ramp + rng.normal(0, 1, ramp.shape)
    images["gradient sky"] = np.stack(
        [90 + 60 * ramp[..., 0], 140 + 50 * ramp[..., 0], 220 + 20 * ramp[..., 0]], axis=-1
    ) + rng.normal(0, 1, ramp.shape)
    return [
        Sample(
            name,
            name,
            "negative",
            _encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")),
        )
        for name, pixels in images.items()
    ]


def _packaged(package: str, folder: str, name: str) -> Image.Image | None:
    path = package_file(package, folder, name)
    if path is None:
        return None
    with Image.open(path) as image:
        return image.convert("RGB")


def samples(megapixels: float | None = None) -> list[Sample]:
    """The whole evaluation set: each photo with its copies, then the hard negatives.

    With `megapixels`, every photo (and the stereo pair's other view) is first made a
    camera-like file of that size (upscaled, with sensor noise): the same set at another scale,
    to check that thresholds read off one rendering hold on another.
    """
    logo = _logo()
    out: list[Sample] = []
    for seed, photo in enumerate(photos()):
        if photo.name.split("/")[1] in _REGION_SOURCES:
            continue  # cut into regions below instead
        image = photo.image if megapixels is None else camera_like(photo.image, megapixels, seed)
        original = _encode(image, quality=95)
        out.append(Sample(f"{photo.name} original", photo.name, "original", original))
        for kind, detail, data in _copies(image, original, logo):
            out.append(Sample(f"{photo.name} {detail}", photo.name, kind, data))
    stereo = _packaged("skimage", "data", "motorcycle_right.png")
    if stereo is not None:  # the left view is one of the photos above
        if megapixels is not None:
            stereo = camera_like(stereo, megapixels, seed=99)
        out.append(Sample("motorcycle right view", "motorcycle right", "negative", _encode(stereo)))
    for package, folder, name in _REGION_SOURCES.values():
        big = _packaged(package, folder, name)
        if big is not None:
            out += _regions(big, f"{name} region")
    for name in ("brick.png", "grass.png", "gravel.png", "coins.png", "page.png", "text.png"):
        texture = _packaged("skimage", "data", name)
        if texture is not None:
            out.append(Sample(name, name, "negative", _encode(texture)))
    out += _low_detail(seed=7)
    return out
