"""What writing the HTML report costs a scan, as a user times it: the whole `dupfinder scan`
process, start-up included.

    python -m benchmarks.report [--n 10000] [--copies 0.1] [--rounds 2]

Makes N photo-like JPEGs (640 x 480, once, cached in `.bench-cache/report-N/`), a fraction of
them copies of others (re-encoded at another quality and half size, so every copy is in a set
and gets a thumbnail), then times `dupfinder scan --quiet --json` (the baseline) and the same
with `--html`, taking turns, best of ROUNDS each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import CACHE
from tests.images import photo, write


def corpus(n: int, copies: float) -> Path:
    folder = CACHE / f"report-{n}-{copies}"
    done = folder / ".complete"
    if done.exists():
        return folder
    originals = int(n * (1 - copies))
    for i in range(originals):
        write(folder / f"{i // 1000:02d}" / f"p{i}.jpg", photo(10_000 + i), "JPEG", quality=90)
    for k in range(n - originals):
        source = photo(10_000 + k).resize((320, 240))
        write(folder / "copies" / f"c{k}.jpg", source, "JPEG", quality=70)
    done.touch()
    return folder


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "worker.cli", "scan", "--quiet", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--copies", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = corpus(args.n, args.copies)
    with tempfile.TemporaryDirectory() as out:
        report = str(Path(out) / "report.html")
        plain, html = [], []
        for _ in range(args.rounds):
            plain.append(timed(["--json", str(folder)]))
            html.append(timed(["--json", "--html", report, str(folder)]))
    print(
        f"dupfinder scan of {args.n:,} files ({args.copies:.0%} copies, each in a set), "
        f"{os.cpu_count()} cores, whole process, best of {args.rounds}:"
    )
    print(f"  without the report (baseline)  {min(plain):7.1f} s")
    print(
        f"  with --html                    {min(html):7.1f} s   "
        f"{(min(html) / min(plain) - 1) * 100:+.1f} %"
    )


if __name__ == "__main__":
    main()
