"""The compiled 32 x 32 shrink must be Pillow's Lanczos resize bit for bit, or fall back to it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from worker.core import shrink as shrink_module
from worker.core.shrink import SIDE, shrink, uses_native


@pytest.fixture(autouse=True)
def compiled_shrink() -> None:
    """Every test here runs the C extension, which every installation with a C compiler builds:
    without it `shrink` resizes with Pillow and the tests would compare Pillow with itself. If a
    Pillow upgrade changes its arithmetic or pass order, hashing falls back to Pillow's resize
    (slower, still exact); every test here then fails, loudly, instead of passing silently."""
    assert uses_native(), "worker.core._shrink is not built (pip install -e . with a C compiler)"


def _pillow(image: Image.Image, gap: float | None) -> NDArray[np.uint8]:
    resized = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS, reducing_gap=gap)
    return np.asarray(resized, dtype=np.uint8)


def _noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return Image.fromarray(pixels, "L")


def test_random_shapes_with_and_without_box_reduction_match_pillow_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    shapes = [tuple(int(v) for v in rng.integers(33, 1400, 2)) for _ in range(120)]
    # Around Pillow's switch to a vertical first pass (2 * width = height + 31) on both sides.
    shapes += [(w, 2 * w - 31 + d) for w in (40, 117, 233, 400) for d in (-2, -1, 0, 1, 2)]
    shapes += [(33, 33), (34, 900), (900, 34), (2309, 1732), (1732, 2309), (4000, 600)]
    for index, (width, height) in enumerate(shapes):
        image = _noise(width, height, index)
        gaps = (None, 8.0) if index % 4 else (None, 8.0, 1.0, 2.5)  # small gaps: reduce to ~32
        for gap in gaps:
            assert np.array_equal(shrink(image, gap), _pillow(image, gap)), (width, height, gap)


def test_small_images_and_photographs_match_pillow() -> None:
    for size in ((8, 8), (32, 32), (20, 300), (300, 32), (31, 64)):
        image = _noise(*size, seed=1)
        assert np.array_equal(shrink(image), _pillow(image, None)), size
    gradient = np.add.outer(np.arange(480), np.arange(640)) % 256
    photo_like = Image.fromarray(gradient.astype(np.uint8), "L").rotate(17, expand=True)
    assert np.array_equal(shrink(photo_like, 8.0), _pillow(photo_like, 8.0))


def test_only_greyscale_is_accepted() -> None:
    with pytest.raises(ValueError, match="greyscale"):
        shrink(Image.new("RGB", (64, 64)))


@pytest.fixture
def rechecked() -> Iterator[None]:
    """The check against Pillow made afresh in the test, and again after it."""
    uses_native.cache_clear()
    yield
    uses_native.cache_clear()


@pytest.mark.usefixtures("rechecked")
@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("_lanczos", lambda pixels, extent: np.zeros((32, 32)), "falls back to Pillow"),
        ("_native", None, "not built"),
    ],
    ids=["disagreeing", "not-built"],
)
def test_a_shrink_that_disagrees_or_is_missing_falls_back_to_pillows_resize(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    value: object,
    says: str,
) -> None:
    monkeypatch.setattr(shrink_module, name, value)
    image = _noise(577, 433, seed=3)
    assert not uses_native()
    assert says in caplog.text
    for gap in (None, 8.0):
        assert np.array_equal(shrink(image, gap), _pillow(image, gap))


def test_the_extension_refuses_pixels_and_taps_that_do_not_fit() -> None:
    # Bytes from outside the module must never make the C code read past a buffer.
    native = shrink_module._native
    assert native is not None
    across, down = native.taps(64, 64.0), native.taps(48, 48.0)
    assert len(native.lanczos(bytes(64 * 48), 64, 48, across, down)) == SIDE * SIDE
    for pixels, width, height, a, d in (
        (bytes(64 * 48 - 1), 64, 48, across, down),  # too few pixels
        (bytes(64 * 48), 48, 64, across, down),  # taps for 64 inputs across 48
        (bytes(64 * 48), 64, 48, across[:-4], down),  # truncated taps
        (bytes(64 * 48), 64, 48, across, b""),
    ):
        with pytest.raises(ValueError):
            native.lanczos(pixels, width, height, a, d)
    for size, extent in ((0, 1.0), (10, 11.0), (10, 0.0)):
        with pytest.raises(ValueError):
            native.taps(size, extent)
