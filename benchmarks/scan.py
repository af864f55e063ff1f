"""`dupfinder scan` as a user times it: the whole process, start-up included, against the bare
reduced-scale decode of the same files in the same run.

    python -m benchmarks.scan [--rounds 3] [--workers 1]

Camera-like JPEGs of 4 to 12 MP (the 13 sample photographs at 14 sizes, 182 files, made once
and cached in `.bench-cache/`) are scanned by the real command (`python -m worker.cli scan
--quiet --json --workers W FILES`), and each file is decoded bare at the scale hashing asks
libjpeg for (`Image.draft` then `load`, nothing else) in this process on one core: the floor
no scan can beat. Both take turns, ROUNDS each; the table prints the best and the median of
each and the scan's rate as a share of the floor's (W floors when the scan has W workers).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.corpus import camera_files
from benchmarks.hashing import floor

#: 14 sizes from 4 to 12 MP: with the 13 sample photographs, 182 files.
MEGAPIXELS = tuple(round(4 + k * 8 / 13, 2) for k in range(14))


def files() -> list[Path]:
    return [path for megapixels in MEGAPIXELS for path in camera_files(megapixels)]


def bare_decode_seconds(paths: list[Path]) -> float:
    """Seconds to read and decode every file at the hashing scale, in this process."""
    started = time.perf_counter()
    for path in paths:
        floor(path.read_bytes())
    return time.perf_counter() - started


def scan_seconds(paths: list[Path], workers: int) -> float:
    """Seconds of the whole `dupfinder scan` process over `paths`, start to exit."""
    command = [sys.executable, "-m", "worker.cli", "scan", "--quiet", "--json"]
    started = time.perf_counter()
    subprocess.run(
        [*command, "--workers", str(workers), *map(str, paths)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    paths = files()
    bare_decode_seconds(paths)  # warms the page cache, as a user's second scan finds it
    bare, scans = [], []
    for _ in range(args.rounds):
        bare.append(bare_decode_seconds(paths))
        scans.append(scan_seconds(paths, args.workers))
    n = len(paths)
    print(
        f"{n} camera-like JPEGs of 4-12 MP, {args.rounds} rounds taking turns; the scan with "
        f"{args.workers} worker process{'es' if args.workers > 1 else ''}, start-up included:"
    )
    print(f"  {'':44} {'best':>12} {'median':>12}")
    for name, times in (
        ("bare reduced-scale decode, one core (floor)", bare),
        ("dupfinder scan, whole process", scans),
    ):
        print(f"  {name:44} {n / min(times):8.1f} im/s {n / statistics.median(times):8.1f} im/s")
    # The floor is one core's; a scan of W workers is held to W floors.
    best = min(bare) / (min(scans) * args.workers)
    median = statistics.median(bare) / (statistics.median(scans) * args.workers)
    print(f"  the scan's rate as a share of the floor's: {best:.0%} best, {median:.0%} median")


if __name__ == "__main__":
    main()
