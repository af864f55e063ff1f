"""Peak memory of hashing one image, measured in a process of its own (`python -m
tests.memory_probe KIND WIDTH HEIGHT`): prints JSON with the peak resident growth during
`hash_image` and the estimate it reserved. `python -m tests.memory_probe refaults` prints how
often the tuned allocator makes a hash thread fault its short-lived buffers in afresh.

The kinds are the decompression bombs that cost the most memory per byte of file: flat PNGs
in RGB, RGBA and 16-bit, and a bilevel TIFF; a camera-like JPEG for comparison.
"""

from __future__ import annotations

import io
import json
import re
import resource
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image

MiB = 1024 * 1024


def bomb(kind: str, size: tuple[int, int]) -> bytes:
    """The file of one kind, at `size`."""
    buffer = io.BytesIO()
    width, height = size
    if kind == "rgb":
        Image.new("RGB", size, (40, 120, 200)).save(buffer, "PNG")
    elif kind == "rgba":
        Image.new("RGBA", size, (40, 120, 200, 128)).save(buffer, "PNG")
    elif kind == "16bit":
        Image.fromarray(np.full((height, width), 30_000, np.uint16)).save(buffer, "PNG")
    elif kind == "bilevel":
        Image.new("1", size, 1).save(buffer, "TIFF", compression="group4")
    elif kind == "jpeg":
        rng = np.random.default_rng(1)
        coarse = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
        picture = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
        picture.save(buffer, "JPEG", quality=90)
    else:
        raise ValueError(kind)
    return buffer.getvalue()


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    assert match is not None
    return int(match.group(1)) * 1024


def measure(data: bytes) -> dict[str, float]:
    """Peak resident growth while hashing `data`, and the bytes reserved for it."""
    from worker.budget import release_memory, tune_allocator
    from worker.core.hashing import hash_image

    tune_allocator()
    reserved: list[int] = []

    def admit(needed: int) -> AbstractContextManager[object]:
        reserved.append(needed)
        return nullcontext()

    hash_image(data[:0] + bomb("rgb", (64, 64)), max_pixels=10**9)  # imports and compiles
    release_memory()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak to the current size
    before = _status("VmRSS")
    hash_image(data, max_pixels=10**9, admit=admit)
    peak = _status("VmHWM")
    release_memory()
    return {
        "peak_mb": (peak - before) / MiB,
        "reserved_mb": max(reserved, default=0) / MiB,
        "after_mb": (_status("VmRSS") - before) / MiB,
        "file_kb": len(data) / 1024,
    }


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def refaults(buffers: int = 20) -> dict[str, float]:
    """Page faults per 4 kB page of a short-lived 2-3 MB buffer (an upload's file bytes, a
    draft image) allocated, written and freed over and over, on a thread and on the main
    thread: near 1 when every buffer comes in fresh pages from the system."""
    import threading

    from worker.budget import tune_allocator

    tune_allocator()
    shares: dict[str, float] = {}

    def churn(where: str) -> None:
        for size in (3_000_000, 2_000_000):  # the heap grows to its working size
            warm = b"\x01" * size
            del warm
        pages = 0
        before = _minor_faults()
        for i in range(buffers):
            size = 2_000_000 + 100_000 * (i % 10)
            buffer = b"\x01" * size
            del buffer
            pages += size // 4096
        shares[where] = (_minor_faults() - before) / pages

    thread = threading.Thread(target=churn, args=("thread",))
    thread.start()
    thread.join()
    churn("main")
    return shares


if __name__ == "__main__":
    if sys.argv[1] == "refaults":
        print(json.dumps(refaults()))
    else:
        kind, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        print(json.dumps(measure(bomb(kind, (width, height)))))
