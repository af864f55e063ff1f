"""The compiled 32 x 32 shrink must be Pillow's Lanczos resize bit for bit, or fall back to it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from worker.core import shrink as shrink_module
from worker.core.shrink import SIDE, agrees_with_pillow, compile_ahead, shrink, uses_compiled


@pytest.fixture(autouse=True)
def compiled_shrink() -> None:
    """Every test here runs the compiled loops, as a worker does (a process that never asks for
    them resizes with Pillow, and would compare Pillow with itself)."""
    compile_ahead()
    assert uses_compiled()


def _pillow(image: Image.Image, gap: float | None) -> NDArray[np.uint8]:
    resized = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS, reducing_gap=gap)
    return np.asarray(resized, dtype=np.uint8)


def _noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    return Image.fromarray(pixels, "L")


def test_the_installed_pillow_resamples_as_this_module_expects() -> None:
    # If a Pillow upgrade changes its arithmetic or pass order, hashing falls back to Pillow's
    # resize (slower, still exact); this test says so loudly instead of letting it pass silently.
    assert agrees_with_pillow()


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
def broken_lanczos(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    agrees_with_pillow.cache_clear()
    monkeypatch.setattr(shrink_module, "_lanczos", lambda pixels, extent: np.zeros((32, 32)))
    yield
    agrees_with_pillow.cache_clear()


@pytest.mark.usefixtures("broken_lanczos")
def test_a_disagreement_with_pillow_falls_back_to_pillows_resize(
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = _noise(577, 433, seed=3)
    assert not agrees_with_pillow()
    assert "falls back to Pillow" in caplog.text
    for gap in (None, 8.0):
        assert np.array_equal(shrink(image, gap), _pillow(image, gap))
