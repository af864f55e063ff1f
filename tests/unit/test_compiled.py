"""The Numba decorator: loops compile even where their machine code cannot be cached."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numba
import pytest

from worker.core.compiled import compiled


def test_loops_compile_where_no_cache_directory_can_be_written() -> None:
    # Numba refuses cache=True when it finds no writable place for a function's file, as on a
    # read-only root file system; a function without a source file meets the same refusal.
    namespace: dict[str, Any] = {}
    exec("def add(a, b):\n    return a + b\n", namespace)  # a function with no source file
    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(namespace["add"])
    assert compiled(namespace["add"])(2, 3) == 5


def test_hashing_and_a_small_search_leave_numba_unloaded_until_asked() -> None:
    """Numba's import and set-up cost a process about a second: a scan of a few files must not
    pay it. Hashing never needs it (its shrink is C) and a small search brute-forces until
    `compile_ahead`."""
    script = """
import sys
import numpy as np
from PIL import Image
import io
from worker.core import compiled, hashing, matching, neighbours, shrink
buffer = io.BytesIO()
Image.radial_gradient("L").resize((300, 200)).save(buffer, "JPEG")
hashing.hash_image(buffer.getvalue(), max_pixels=10**6)
neighbours.pairs_within(np.arange(100, dtype=np.uint64), 3)
assert "numba" not in sys.modules, "numba was imported"
assert shrink.uses_native()
compiled.compile_ahead()
assert "numba" in sys.modules
big = np.random.default_rng(1).integers(0, 2**63, neighbours.BRUTE_FORCE_MAX + 1).astype(np.uint64)
big[1] = big[0] ^ np.uint64(3)
first, second, _ = neighbours.pairs_within(big, 2)
assert (0, 1) in set(zip(first.tolist(), second.tolist()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
