"""Loops compiled by Numba: how they are compiled and cached, when Numba is paid for, and how
to pay for it up front.

Numba costs a process about half a second to import and as much again to set up its CPU target
and load the first cached machine code (measured on one core here: 0.4 s and 0.6-0.8 s). A
long-running worker pays that once; a command-line scan of a few hundred files would spend more
on it than the loops save. So `compiled` defers everything: Numba is imported, and a module's
loops handed to it, only when one of them is first called (or by `compile_ahead`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()


class Deferred:
    """A function that becomes a Numba dispatcher on its first call.

    Every deferred function of its module is handed to Numba at that moment and put in the
    module's namespace in place of its stand-in, so that loops calling one another find
    dispatchers when Numba compiles them, and later calls from the module go straight to Numba.
    """

    def __init__(self, function: Callable[..., Any], inline: bool) -> None:
        self.function = function
        self.inline = inline
        self.dispatcher: Any = None

    def __call__(self, *args: Any) -> Any:
        if self.dispatcher is None:
            _materialise(self)
        return self.dispatcher(*args)


def compiled(function: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
    """`function` to be compiled by Numba to run without the GIL, its machine code cached on
    disk; with `inline=True`, a helper inlined into the loops that call it instead.

    Where no cache directory is writable (a read-only root file system, no `NUMBA_CACHE_DIR`),
    Numba refuses `cache=True`; the loop is then compiled in each process instead (a few
    seconds, once) rather than failing.
    """
    if function is None:
        return lambda f: Deferred(f, inline)
    return Deferred(function, inline)


def _materialise(deferred: Deferred) -> None:
    with _LOCK:
        if deferred.dispatcher is not None:
            return
        module = sys.modules.get(deferred.function.__module__)
        namespace = vars(module) if module is not None else {}
        siblings = [v for v in namespace.values() if isinstance(v, Deferred)]
        if deferred not in siblings:  # a function defined outside any imported module
            siblings.append(deferred)
        for sibling in siblings:
            if sibling.dispatcher is None:
                sibling.dispatcher = _dispatcher(sibling)
        for name, value in list(namespace.items()):
            if isinstance(value, Deferred):
                namespace[name] = value.dispatcher


def _dispatcher(deferred: Deferred) -> Any:
    import numba

    if deferred.inline:
        return numba.njit(inline="always")(deferred.function)
    try:
        return numba.njit(nogil=True, cache=True)(deferred.function)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return numba.njit(nogil=True)(deferred.function)


def compile_ahead() -> None:
    """Compile every loop now rather than in the first search (about 6 s).

    Numba keeps the machine code in its cache directory (`NUMBA_CACHE_DIR`, else next to the
    source or in the user's cache), so an image build or a deployment step can pay this once.
    """
    from worker.core import neighbours  # imports this module

    neighbours.compile_ahead()
