"""Loops compiled by Numba: how they are compiled and cached, and how to pay for that up front."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def compiled(function: Callable[..., Any]) -> Any:
    """`function` compiled by Numba to run without the GIL, its machine code cached on disk.

    Where no cache directory is writable (a read-only root file system, no `NUMBA_CACHE_DIR`),
    Numba refuses `cache=True` at import; the worker then compiles in each process instead
    (a few seconds, once) rather than failing to start.
    """
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return numba.njit(nogil=True)(function)


def compile_ahead() -> None:
    """Compile every loop now rather than in the first search or upload (about 6 s).

    Numba keeps the machine code in its cache directory (`NUMBA_CACHE_DIR`, else next to the
    source or in the user's cache), so an image build or a deployment step can pay this once.
    """
    from worker.core import neighbours, shrink  # both import this module

    neighbours.compile_ahead()
    shrink.compile_ahead()
