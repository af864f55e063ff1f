"""pHash's DCT without importing SciPy: `scipy.fftpack.dct`'s doubles, bit for bit.

pHash's bits compare DCT coefficients with their median, and in flat or ramped images many
coefficients sit at the median to within rounding: a DCT that is merely accurate (two small
matrix products) flipped bits of 408 of 4 256 such probe images against imagehash's. SciPy's
unnormalised DCT-II is pocketfft's: fold the input, run pocketfft's backward real FFT, unfold
with twiddles from pocketfft's own sine and cosine table. NumPy's `irfft` runs that same
pocketfft transform, so doing the fold and the unfold here, in the same order of operations,
gives the same doubles, and a process saves SciPy's import (about 0.15 s, a third of a scan's
start-up).

That equality rests on how both libraries were built (the same pocketfft, no fused multiply-adds),
so `agrees_with_scipy()` checks it once per process against a digest of SciPy's output on probe
images, and `dct2` falls back to SciPy itself if they ever differ. The digest was taken on
x86-64: on a machine whose own SciPy rounds otherwise while NumPy does not, hashes keep the
x86-64 bits, the same as every other worker of a mixed fleet stores.
"""

from __future__ import annotations

import hashlib
import logging
import math
from functools import cache

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

#: The transforms' length: pHash's 32 x 32 input.
SIDE = 32

#: SHA-256 of `scipy.fftpack.dct(scipy.fftpack.dct(p, axis=-2), axis=-1)` over `_probes()` as
#: little-endian doubles (SciPy 1.17.1, NumPy 2.4.6, x86-64); a unit test keeps it SciPy's.
PROBES_DIGEST = "d45962417e5b9ae25cab1dd413a04d2bbfce7e727af3950ae4e4ad468482b1d3"


def dct2(pixels: NDArray[np.float64]) -> NDArray[np.float64]:
    """`scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=-2), axis=-1)` for 32 x 32 images
    (the last two axes; any leading axes are a stack of images)."""
    if pixels.shape[-2:] != (SIDE, SIDE):
        raise ValueError(f"dct2 takes 32 x 32 images, not {pixels.shape[-2:]}")
    if not agrees_with_scipy():
        import scipy.fftpack  # only where NumPy's FFT does not give SciPy's bits

        return np.asarray(scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=-2), axis=-1))
    return _numpy_dct2(pixels)


@cache
def agrees_with_scipy() -> bool:
    """Whether `_numpy_dct2` gives SciPy's doubles on the probes here (checked once per process)."""
    digest = _digest(_numpy_dct2(_probes()))
    if digest != PROBES_DIGEST:
        log.warning(
            "NumPy's FFT does not reproduce SciPy's DCT bit for bit here (NumPy %s); pHash "
            "uses scipy.fftpack, which costs each process about 0.15 s more to start",
            np.__version__,
        )
        return False
    return True


def _numpy_dct2(pixels: NDArray[np.float64]) -> NDArray[np.float64]:
    return _dct_ii(_dct_ii(pixels, -2), -1)


def _digest(values: NDArray[np.float64]) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()


def _probes() -> NDArray[np.float64]:
    """Images whose coefficients test every step: noise, and the flat, ramped and one-dot
    images whose coefficients sit at the median within rounding."""
    rng = np.random.default_rng(20261203)
    ramp = np.arange(SIDE, dtype=np.float64)
    images = [rng.integers(0, 256, (SIDE, SIDE)).astype(np.float64) for _ in range(6)]
    images += [np.full((SIDE, SIDE), float(v)) for v in (0, 1, 127, 255)]
    images += [np.add.outer(a * ramp, b * ramp) for a, b in ((1, 0), (0, 3), (2, 5), (-4, 7))]
    for value in (1.0, 200.0):
        dot = np.full((SIDE, SIDE), 50.0)
        dot[3, 17] = value
        images.append(dot)
    return np.stack(images)


@cache
def _twiddles() -> NDArray[np.float64]:
    """The real parts of pocketfft's `sincos_2pibyn(4 * 32)[1 .. 32]`, computed its way (a
    table of two levels, each entry from its own octant), which is not `cos` of the angle."""
    n = 4 * SIDE
    angle = math.pi / (4 * n)  # pocketfft's long-double 0.25 * pi / n, rounded: exact here
    count = (n + 2) // 2
    shift = 1
    while (1 << shift) * (1 << shift) < count:
        shift += 1
    mask = (1 << shift) - 1
    fine = [(1.0, 0.0)] + [_octant(i, n, angle) for i in range(1, mask + 1)]
    coarse = [(1.0, 0.0)] + [
        _octant(i * (mask + 1), n, angle) for i in range(1, (count + mask) // (mask + 1))
    ]

    def real(index: int) -> float:
        if 2 * index > n:
            index = n - index  # the conjugate: the same real part
        (r1, i1), (r2, i2) = fine[index & mask], coarse[index >> shift]
        return r1 * r2 - i1 * i2

    return np.array([real(i + 1) for i in range(SIDE)])


def _octant(x: int, n: int, angle: float) -> tuple[float, float]:
    """cos and sin of 2 pi x / n as pocketfft computes them: from the first octant's angle."""
    x <<= 3
    if x < 4 * n:  # first half
        if x < 2 * n:
            if x < n:
                return math.cos(x * angle), math.sin(x * angle)
            return math.sin((2 * n - x) * angle), math.cos((2 * n - x) * angle)
        x -= 2 * n
        if x < n:
            return -math.sin(x * angle), math.cos(x * angle)
        return -math.cos((2 * n - x) * angle), math.sin((2 * n - x) * angle)
    x = 8 * n - x
    if x < 2 * n:
        if x < n:
            return math.cos(x * angle), -math.sin(x * angle)
        return math.sin((2 * n - x) * angle), -math.cos((2 * n - x) * angle)
    x -= 2 * n
    if x < n:
        return -math.sin(x * angle), -math.cos(x * angle)
    return -math.cos((2 * n - x) * angle), -math.sin((2 * n - x) * angle)


def _dct_ii(values: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """pocketfft's unnormalised DCT-II of length 32 along `axis`, step for step."""
    n, half = SIDE, SIDE // 2
    c = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    # Fold: doubled ends, then c[k + 1] - c[k] and c[k + 1] + c[k] for odd k: a half-complex
    # spectrum r0, r1, i1, ..., r15, i15, r16.
    odd, even = c[1 : n - 1 : 2], c[2 : n - 1 : 2]
    spectrum = np.empty((half + 1, *c.shape[1:]), np.complex128)
    spectrum.real[0] = c[0] * 2
    spectrum.imag[0] = 0.0
    spectrum.real[1:half] = even + odd
    spectrum.imag[1:half] = even - odd
    spectrum.real[half] = c[n - 1] * 2
    spectrum.imag[half] = 0.0
    c = np.fft.irfft(spectrum, n=n, axis=0, norm="forward")  # unscaled, as pocketfft's
    low, high = _twiddle_pairs(c.ndim)
    ks, kcs = c[1:half], c[n - 1 : half : -1]
    t1 = low * kcs + high * ks
    t2 = low * ks - high * kcs
    out = np.empty_like(c)
    out[0] = c[0]
    out[1:half] = 0.5 * (t1 + t2)
    out[n - 1 : half : -1] = 0.5 * (t1 - t2)
    out[half] = c[half] * _twiddles()[half - 1]
    return np.moveaxis(out, 0, axis)


@cache
def _twiddle_pairs(ndim: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The twiddles of k and of 32 - k, for k = 1 .. 15, shaped to broadcast over `ndim` axes."""
    twiddle = _twiddles()
    shape = (SIDE // 2 - 1, *([1] * (ndim - 1)))
    low = twiddle[0 : SIDE // 2 - 1].reshape(shape)
    high = twiddle[SIDE - 2 : SIDE // 2 - 1 : -1].reshape(shape)
    return low, high
