"""`dupfinder scan` as a user times it: the whole process, start-up included, against the bare
reduced-scale decode of the same files in the same run.

    python -m benchmarks.scan [--rounds 3] [--workers 1]

Camera-like JPEGs of 4 to 12 MP (the 13 sample photographs at 14 sizes, 182 files, made once
and cached in `.bench-cache/`) are scanned by the real command (`python -m worker.cli scan
--quiet --json --workers W FILES`), and each file is decoded bare at the scale hashing asks
libjpeg for (`Image.draft` then `load`, nothing else) in this process on one core: the floor
no scan can beat. Both take turns, ROUNDS each; the table prints the best and the median of
each and the scan's rate as a share of the floor's (W floors when the scan has W workers).

With one worker everything runs pinned to one core (the scan inherits this process's affinity).
Beside the two, the same run prints where the scan's time goes: `hash_image` over the files in
this process (the scan without any start-up), an empty-folder scan (start-up and exit alone),
and a bare interpreter importing only what a scan cannot do without (NumPy, Pillow, and
pydantic-settings, which reads the configuration; SciPy's DCT, which imagehash's bits depend on,
is reproduced from NumPy's FFT, `worker/core/dct.py`).
The best any scan process could do is the floor over the sum of the first and the last; the
table prints that ceiling too.

The project's own modules are byte-compiled first, as `pip install` leaves an installed package
(the Docker image included). An editable checkout on a machine that sets
`PYTHONDONTWRITEBYTECODE`, as this one does, would otherwise compile them from source at every
start; the empty-folder scan is timed that way too, for comparison.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import camera_files
from benchmarks.hashing import floor

#: What a process that hashes as imagehash does must import, whatever else it leaves out.
UNAVOIDABLE = "import numpy, PIL.Image, pydantic_settings"

#: 14 sizes from 4 to 12 MP: with the 13 sample photographs, 182 files.
MEGAPIXELS = tuple(round(4 + k * 8 / 13, 2) for k in range(14))


#: The packages whose bytecode a scan loads: the project's own.
PACKAGES = tuple(Path(__file__).resolve().parents[1] / name for name in ("worker", "schemas"))


def write_bytecode() -> None:
    """Byte-compile the project, as `pip install` does for an installed package."""
    for package in PACKAGES:
        compileall.compile_dir(package, quiet=1)


def remove_bytecode() -> None:
    """Remove the project's `.pyc` files only: Numba keeps its compiled loops' cache in the same
    folders."""
    for package in PACKAGES:
        for path in package.rglob("*.pyc"):
            path.unlink()


def files() -> list[Path]:
    return [path for megapixels in MEGAPIXELS for path in camera_files(megapixels)]


def bare_decode_seconds(paths: list[Path]) -> float:
    """Seconds to read and decode every file at the hashing scale, in this process."""
    started = time.perf_counter()
    for path in paths:
        floor(path.read_bytes())
    return time.perf_counter() - started


def hashing_seconds(paths: list[Path]) -> float:
    """Seconds to read and hash every file in this process as a scan hashes it (a checksum only
    for files whose size another shares): a scan with no start-up."""
    from worker.core.hashing import hash_image
    from worker.scan import checksummed

    started = time.perf_counter()
    for path, checksum in zip(paths, checksummed([p.stat().st_size for p in paths]), strict=True):
        hash_image(path.read_bytes(), max_pixels=1 << 30, checksum=checksum)
    return time.perf_counter() - started


def command_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def scan_seconds(paths: list[Path], workers: int) -> float:
    """Seconds of the whole `dupfinder scan` process over `paths`, start to exit."""
    command = [sys.executable, "-m", "worker.cli", "scan", "--quiet", "--json"]
    return command_seconds([*command, "--workers", str(workers), *map(str, paths)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    paths = files()
    bare_decode_seconds(paths)  # warms the page cache, as a user's second scan finds it
    hashing_seconds(paths[:2])  # and hashing's one-off set-up (the crop hashes' matrices)
    empty = Path(tempfile.mkdtemp(prefix="dupfinder-empty-"))
    bare, scans, hashing, starts, cold, imports = [], [], [], [], [], []
    for _ in range(args.rounds):
        write_bytecode()
        bare.append(bare_decode_seconds(paths))
        scans.append(scan_seconds(paths, args.workers))
        hashing.append(hashing_seconds(paths))
        starts.append(scan_seconds([empty], args.workers))
        imports.append(command_seconds([sys.executable, "-c", UNAVOIDABLE]))
        remove_bytecode()
        cold.append(scan_seconds([empty], args.workers))
    write_bytecode()
    empty.rmdir()
    n = len(paths)
    print(
        f"{n} camera-like JPEGs of 4-12 MP, {args.rounds} rounds taking turns; the scan with "
        f"{args.workers} worker process{'es' if args.workers > 1 else ''}, start-up included "
        "(the project byte-compiled, as installed):"
    )
    print(f"  {'':44} {'best':>12} {'median':>12}")
    for name, times in (
        ("bare reduced-scale decode, one core (floor)", bare),
        ("dupfinder scan, whole process", scans),
        ("hash_image in this process (no start-up)", hashing),
    ):
        print(f"  {name:44} {n / min(times):8.1f} im/s {n / statistics.median(times):8.1f} im/s")
    for name, times in (
        ("floor over all files", bare),
        ("dupfinder scan of an empty folder", starts),
        ("the same, the project's sources not compiled", cold),
        ("interpreter importing NumPy, Pillow, settings", imports),
    ):
        print(f"  {name:44} {min(times):10.2f} s {statistics.median(times):10.2f} s")
    ceiling = min(bare) / (min(hashing) + min(imports))
    print(f"  ceiling for any scan process (floor / (hashing + those imports)): {ceiling:.0%} best")
    # The floor is one core's; a scan of W workers is held to W floors.
    best = min(bare) / (min(scans) * args.workers)
    median = statistics.median(bare) / (statistics.median(scans) * args.workers)
    print(f"  the scan's rate as a share of the floor's: {best:.0%} best, {median:.0%} median")


if __name__ == "__main__":
    main()
