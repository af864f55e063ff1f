"""What writing the HTML report costs a scan, as a user times it: the whole `dupfinder scan`
process, start-up included.

    python -m benchmarks.report [--n 10000] [--copies 0.1] [--rounds 2]

Makes N photo-like JPEGs (640 x 480, once, cached in `.bench-cache/report-N/`), a fraction of
them copies of others (re-encoded at another quality and half size, so every copy is in a set
and gets a thumbnail), then times `dupfinder scan --quiet --json` (the baseline) and the same
with `--html`, taking turns, ROUNDS each; prints the best and the median of each, since this
machine's speed wanders by more than the difference between runs of one day.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
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


def timed(args: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user and system, the process and its workers) of one scan."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "worker.cli", "scan", "--quiet", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--copies", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
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
        f"{os.cpu_count()} cores, whole process, {args.rounds} rounds taking turns; CPU is user "
        "and system time of the process and its workers, steadier than the wall clock here:"
    )
    print(f"  {'':30} {'best':>9} {'median':>9} {'CPU median':>9}")
    base = _figures(plain)
    for name, runs in (("without the report (baseline)", plain), ("with --html", html)):
        mine = _figures(runs)
        shown = "".join(f"{value:7.1f} s " for value in mine)
        if runs is html:
            shown += "  " + " ".join(
                f"{(m / b - 1) * 100:+6.1f} %" for m, b in zip(mine, base, strict=True)
            )
        print(f"  {name:30} {shown}")


def _figures(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """The best and median wall-clock seconds, and the median CPU seconds, of some runs."""
    walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
    return min(walls), statistics.median(walls), statistics.median(cpus)


if __name__ == "__main__":
    main()
