"""What a change to the hashes costs an upload: this tree's `hash_image` against an earlier
commit's, on the same files, in the same run.

    python -m benchmarks.versions [--baseline 71c876a] [--megapixels 12] [--rounds 5]

The baseline commit is checked out into a temporary git worktree (no download: it comes from
this repository's history). Each side runs in a fresh interpreter of its own, pinned to one
core, with its own code first on `sys.path`; the sides take turns, ROUNDS each, so that the
machine's wandering speed falls on both, and each prints its best pass over the camera-like
JPEGs of `benchmarks/hashing.py`. Beside the time, each side prints the size of the fields an
asset's fingerprint adds to its MongoDB document (BSON, as `worker.store` writes them).

The default baseline, 71c876a, is the last commit before issue 16's matcher work (hash version
3), whose limits are "at most 15 % slower per image" and "at most 4 KiB an asset more".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import camera_files

#: Runs in the measured tree's interpreter: prints one JSON line.
_MEASURE = """
import json, os, sys, time
from pathlib import Path
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import bson
from worker import store
from worker.core import hashing
try:
    from worker.core import shrink
    shrink.compile_ahead()  # as the worker does at boot, where the tree has it
except (ImportError, AttributeError):
    pass
files = [Path(p).read_bytes() for p in sys.argv[1:]]
sizes = [len(bson.encode(store._fingerprint_fields(hashing.hash_image(d, max_pixels=10**9))))
         for d in files]
best = float("inf")
for _ in range(2):
    started = time.perf_counter()
    for data in files:
        hashing.hash_image(data, max_pixels=10**9)
    best = min(best, (time.perf_counter() - started) / len(files))
print(json.dumps({"version": hashing.HASH_VERSION, "ms": best * 1000,
                  "bytes": [min(sizes), max(sizes)]}))
"""


@dataclass(frozen=True)
class Measured:
    """One turn of one side."""

    version: int
    ms: float
    """Best time an image, in milliseconds."""
    smallest: int
    largest: int
    """The fingerprint's fields, in BSON bytes, over the files."""


def _measure(tree: Path, files: list[str]) -> Measured:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *files],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tempfile.gettempdir(),  # not this checkout: `python -c` puts the cwd first
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    line = json.loads(result.stdout.strip().splitlines()[-1])
    return Measured(line["version"], line["ms"], *line["bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="71c876a", help="the commit to compare with")
    parser.add_argument("--megapixels", type=int, default=12, choices=(1, 4, 12))
    parser.add_argument("--rounds", type=int, default=5, help="turns each side takes")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    files = [str(f) for f in camera_files(args.megapixels, "JPEG")]
    with tempfile.TemporaryDirectory() as scratch:
        old = Path(scratch) / "baseline"
        subprocess.run(
            ["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(old), args.baseline],
            check=True,
        )
        try:
            runs: dict[str, list[Measured]] = {"baseline": [], "this": []}
            for _ in range(args.rounds):
                runs["baseline"].append(_measure(old, files))
                runs["this"].append(_measure(here, files))
        finally:
            subprocess.run(
                ["git", "-C", str(here), "worktree", "remove", "--force", str(old)], check=False
            )
    print(
        f"\n== hash_image on {len(files)} camera-like {args.megapixels} MP JPEGs, one core, "
        f"{args.rounds} turns a side (best of 2 passes each)"
    )
    print(f"{'':<28} {'version':>7} {'ms an image, each turn':>40} {'fingerprint BSON':>18}")
    for label, name in (("baseline", f"baseline {args.baseline}"), ("this", "this tree")):
        turns = " ".join(f"{r.ms:.1f}" for r in runs[label])
        first = runs[label][0]
        sizes = f"{first.smallest}-{first.largest} B"
        print(f"{name:<28} {first.version:>7} {turns:>40} {sizes:>18}")
    base, this = runs["baseline"], runs["this"]
    ratios = [t.ms / b.ms for b, t in zip(base, this, strict=True)]
    best = min(r.ms for r in this) / min(r.ms for r in base)
    print(
        f"this tree against the baseline: {best:.2f}x its time (best against best; turn by "
        f"turn {min(ratios):.2f}-{max(ratios):.2f}x); the largest fingerprint "
        f"{this[0].largest - base[0].largest:+d} bytes"
    )


if __name__ == "__main__":
    main()
