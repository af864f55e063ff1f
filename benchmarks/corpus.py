"""Real photographs that ship inside PyPI packages, and camera-like files made from them.

Nothing is downloaded: the photos come from the wheels of scikit-image, scikit-learn and
matplotlib (`pip install -e '.[bench]'`). Generated files are cached under `.bench-cache/`
(git-ignored), so a second run starts at once.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"

#: (package, folder inside it, file) of every base photograph.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data", "astronaut.png"),
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "coffee.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "motorcycle_left.png"),
    ("skimage", "data", "hubble_deep_field.jpg"),
    ("skimage", "data", "retina.jpg"),
    ("skimage", "data", "camera.png"),
    ("skimage", "data", "moon.png"),
    ("skimage", "data", "ihc.png"),
    ("sklearn", "datasets/images", "china.jpg"),
    ("sklearn", "datasets/images", "flower.jpg"),
    ("matplotlib", "mpl-data/sample_data", "grace_hopper.jpg"),
)


def package_file(package: str, folder: str, name: str) -> Path | None:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder / name
    return path if path.exists() else None


@dataclass(frozen=True)
class Photo:
    """One base photograph."""

    name: str
    image: Image.Image


def photos() -> list[Photo]:
    """Every base photo that is installed, as RGB."""
    found = []
    for package, folder, name in PHOTOS:
        path = package_file(package, folder, name)
        if path is not None:
            with Image.open(path) as image:
                found.append(Photo(f"{package}/{name}", image.convert("RGB")))
    if not found:
        raise SystemExit("no sample photos: pip install -e '.[bench]'")
    return found


def camera_like(photo: Image.Image, megapixels: float, seed: int) -> Image.Image:
    """The photo upscaled to `megapixels` with sensor-like noise, so it encodes like a camera's."""
    scale = (megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
    size = (round(photo.width * scale), round(photo.height * scale))
    big = np.asarray(photo.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 3.0, big.shape).astype(np.float32)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8), "RGB")


def encoded(image: Image.Image, fmt: str) -> bytes:
    """Bytes of the image as a DAM would receive them in `fmt`."""
    buffer = io.BytesIO()
    by_format: dict[str, dict[str, object]] = {
        "JPEG": {"quality": 92},
        "WEBP": {"quality": 90},
        "TIFF": {"compression": "tiff_lzw"},
        "PNG": {"compress_level": 6},
    }
    options = by_format.get(fmt, {})
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def camera_files(megapixels: float, fmt: str = "JPEG") -> list[Path]:
    """Camera-like files of every photo at a size and format, generated once and cached."""
    folder = CACHE / f"{fmt.lower()}-{megapixels:g}mp"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for seed, photo in enumerate(photos()):
        path = folder / (photo.name.replace("/", "_").rsplit(".", 1)[0] + "." + fmt.lower())
        if not path.exists():
            path.write_bytes(encoded(camera_like(photo.image, megapixels, seed), fmt))
        files.append(path)
    return files
