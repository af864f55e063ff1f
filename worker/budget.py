"""A process's decode memory as a budget: images are admitted into decoding while the bytes their
decodes are estimated to hold stay under it.

A pixel limit alone does not bound memory: under 150 M pixels, a 5 kB bilevel TIFF or a flat
PNG decodes to 0.15-0.6 GB, and four at once took a process to 5 GB. What cannot fit in the
budget at all is refused as `too_large` with the figures; what cannot fit now waits a moment for
room, then is retried later (`MemoryBusy`), so a hash thread is never held for long by an image
that has to wait. Freed memory is handed back to the system after large decodes, so a process
returns to its idle size instead of keeping its peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Iterator

from worker.core.errors import MemoryBusy, TooLarge

log = logging.getLogger(__name__)

MiB = 1024 * 1024

#: After a decode of at least this many bytes, freed memory is returned to the system.
TRIM_AFTER_BYTES = 32 * MiB

#: glibc's `mallopt` parameters: the size from which allocations are mapped on their own, and
#: the free memory a heap keeps at its top when it is shrunk (and adds when it grows).
_M_MMAP_THRESHOLD = -3
_M_TOP_PAD = -2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_allocator(mmap_threshold_bytes: int = 4 * MiB) -> bool:
    """Map large allocations on their own (glibc), so freeing a decoded image unmaps it; let
    each heap keep as much again free at its top.

    glibc raises its mmap threshold each time a large mapped block is freed, after which the
    next large blocks (Pillow's 16 MiB image blocks) come from heaps that are never given
    back. Fixing the threshold keeps them mapped. Fixing it also fixes the trim threshold at
    128 KiB, though: a hash thread's heap then gave back the file bytes and draft image of
    each upload when they were freed, and the next upload faulted them in afresh (450 page
    faults an upload of a 12 MP camera JPEG, about 1 ms of CPU). A top pad of the same size
    keeps that much per heap, a bounded few MiB a hash thread. (Raising the trim threshold
    instead made some sizes fault more, not less.) False where the C library is not glibc.
    """
    if _LIBC is None:
        return False
    mapped = _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes)
    padded = _LIBC.mallopt(_M_TOP_PAD, mmap_threshold_bytes)
    return bool(mapped and padded)


def release_memory() -> None:
    """Return the allocator's free memory to the system (glibc `malloc_trim`; else nothing)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class DecodeBudget:
    """The bytes that the decodes of one process may hold at once."""

    def __init__(self, limit_bytes: int, *, wait_s: float = 2.0) -> None:
        self.limit_bytes = limit_bytes
        self.wait_s = wait_s
        self._used = 0
        self._room = threading.Condition()

    @property
    def used_bytes(self) -> int:
        """Bytes reserved now."""
        with self._room:
            return self._used

    @contextlib.contextmanager
    def reserve(self, needed: int) -> Iterator[None]:
        """Hold `needed` bytes of the budget for the block.

        Raises `TooLarge` when `needed` exceeds the whole budget, and `MemoryBusy` (retry
        later) when room does not come within `wait_s`.
        """
        if needed > self.limit_bytes:
            raise TooLarge(
                f"decoding needs about {needed / MiB:.0f} MiB, more than this worker's decode "
                f"budget of {self.limit_bytes / MiB:.0f} MiB (DUPFINDER_DECODE_MEMORY_MB)"
            )
        deadline = time.monotonic() + self.wait_s
        with self._room:
            while self._used + needed > self.limit_bytes:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    if self._used + needed <= self.limit_bytes:
                        break
                    raise MemoryBusy(
                        f"decoding needs about {needed / MiB:.0f} MiB; "
                        f"{self._used / MiB:.0f} of {self.limit_bytes / MiB:.0f} MiB are taken "
                        "by other decodes"
                    )
            self._used += needed
        try:
            yield
        finally:
            with self._room:
                self._used -= needed
                self._room.notify_all()
            if needed >= TRIM_AFTER_BYTES:
                release_memory()
