"""The Numba decorator: loops compile even where their machine code cannot be cached."""

from __future__ import annotations

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
