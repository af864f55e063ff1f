"""pHash's DCT from NumPy's FFT: SciPy's doubles, bit for bit, or SciPy itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.fftpack

from worker.core import dct


def scipy_dct2(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=-2), axis=-1))


def probe_images() -> list[np.ndarray]:
    """Noise, and the images whose coefficients tie at the median within rounding: flat,
    ramped, banded and one-dot images, where a merely accurate DCT flips pHash bits."""
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (32, 32)).astype(np.float64) for _ in range(600)]
    images += [np.full((32, 32), float(v)) for v in range(256)]
    ramp = np.arange(32, dtype=np.float64)
    for _ in range(300):
        a, b = rng.uniform(-8, 8, 2)
        images.append(np.clip(np.round(np.add.outer(a * ramp, b * ramp) + 128), 0, 255))
    for _ in range(300):
        dot = np.full((32, 32), float(rng.integers(256)))
        dot[rng.integers(32), rng.integers(32)] = float(rng.integers(256))
        images.append(dot)
    for period in range(1, 17):
        images.append(np.tile((np.arange(32) // period % 2) * 255.0, (32, 1)))
    return images


def test_the_dct_is_scipys_bit_for_bit() -> None:
    assert dct.agrees_with_scipy()
    images = probe_images()
    differing = [i for i, p in enumerate(images) if not np.array_equal(dct.dct2(p), scipy_dct2(p))]
    assert differing == []
    stack = np.stack(images[:50])  # a stack of images transforms each as alone
    assert np.array_equal(dct.dct2(stack), scipy_dct2(stack))


def test_the_stored_digest_is_scipys_own() -> None:
    assert dct._digest(scipy_dct2(dct._probes())) == dct.PROBES_DIGEST


def test_where_numpy_gives_other_bits_scipy_computes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dct, "PROBES_DIGEST", "0" * 64)
    dct.agrees_with_scipy.cache_clear()
    try:
        assert not dct.agrees_with_scipy()
        image = np.random.default_rng(3).integers(0, 256, (32, 32)).astype(np.float64)
        assert np.array_equal(dct.dct2(image), scipy_dct2(image))
    finally:
        monkeypatch.undo()
        dct.agrees_with_scipy.cache_clear()
    assert dct.agrees_with_scipy()


def test_hashing_does_not_import_scipy() -> None:
    """SciPy's import costs a process about 0.15 s: a third of a scan's start-up."""
    code = (
        "import io, sys\n"
        "from PIL import Image\n"
        "from worker.core.hashing import hash_image\n"
        "buffer = io.BytesIO()\n"
        "Image.effect_noise((300, 200), 60).convert('RGB').save(buffer, 'JPEG')\n"
        "hash_image(buffer.getvalue(), max_pixels=10**8)\n"
        "print('scipy' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_other_sizes_are_refused_not_transformed_wrongly() -> None:
    # The fold and the twiddles are those of length 32: any other length would come out wrong
    with pytest.raises(ValueError, match="32 x 32"):
        dct.dct2(np.zeros((16, 32)))
