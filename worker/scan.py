"""`dupfinder scan`: the hashing and grouping core over local folders, with no services.

Files are hashed in parallel processes (decoding is CPU-bound), grouped with the same rule as the
worker, and returned as `duplicates.found`-shaped sets: the file path is the asset id, the file's
modification time its upload date.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas.events import DuplicateSet
from schemas.messages import MatchRule, Sort
from worker.core import grouping, matching, pages
from worker.core.errors import PermanentError, TransientError
from worker.core.hashing import HashedImage, hash_image
from worker.fetching import FetchLimits, fetch

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".heic",
        ".heif",
        ".avif",
    }
)


@dataclass(frozen=True, slots=True)
class ScanFailure:
    """A file that could not be hashed, and why."""

    path: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Duplicate sets found, plus what was read and what failed."""

    sets: list[DuplicateSet]
    files: int
    failures: list[ScanFailure]


def image_files(paths: Iterable[str]) -> Iterator[Path]:
    """Image files under `paths` (files are taken as given, folders walked), in stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield Path(root) / name
        else:
            yield path


def checksummed(sizes: list[int]) -> list[bool]:
    """Which files, by their sizes in bytes, need their bytes' checksum: only those whose size
    another file shares can be a byte copy (`identical`), so the others skip it (4-5 % of a
    JPEG's decode)."""
    counts = Counter(sizes)
    return [counts[size] > 1 for size in sizes]


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None  # its read will fail and say why


def _hash_file(
    path: str, limits: FetchLimits, max_pixels: int, checksum: bool
) -> HashedImage | ScanFailure:
    try:
        return hash_image(fetch(path, limits), max_pixels=max_pixels, checksum=checksum)
    except (PermanentError, TransientError) as e:
        return ScanFailure(path, e.reason, e.detail)


def scan(
    paths: Iterable[str],
    *,
    match: MatchRule,
    max_distance: int,
    limits: FetchLimits,
    max_pixels: int,
    sort: Sort,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Hash every image under `paths` and group the duplicates."""
    files = [str(p) for p in image_files(paths)]
    stats = [_stat(path) for path in files]  # once: sizes for the checksums, times for the sets
    n, checksums = len(files), checksummed([s.st_size if s else -1 for s in stats])
    hashed: list[tuple[str, HashedImage]] = []
    failures: list[ScanFailure] = []
    with contextlib.ExitStack() as stack:
        outcomes: Iterable[HashedImage | ScanFailure]
        if workers > 1:
            # Imported here: multiprocessing's import is 5-6 ms of a one-worker scan's start.
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            outcomes = pool.map(
                _hash_file, files, [limits] * n, [max_pixels] * n, checksums, chunksize=8
            )
        else:
            # One worker hashes here: a child would only add its start and the copying of
            # every result back, on the same core.
            outcomes = map(_hash_file, files, [limits] * n, [max_pixels] * n, checksums)
        for done, (path, outcome) in enumerate(zip(files, outcomes, strict=True), start=1):
            if isinstance(outcome, ScanFailure):
                failures.append(outcome)
            else:
                hashed.append((path, outcome))
            if progress is not None:
                progress(done, n)
    mtimes = {path: stat.st_mtime for path, stat in zip(files, stats, strict=True) if stat}
    return ScanResult(
        _group(hashed, mtimes, match, max_distance, sort, threads=workers), n, failures
    )


def _group(
    hashed: list[tuple[str, HashedImage]],
    modified: dict[str, float],
    match: MatchRule,
    max_distance: int,
    sort: Sort,
    *,
    threads: int,
) -> list[DuplicateSet]:
    ids = [path for path, _ in hashed]
    mtimes = [datetime.fromtimestamp(modified[path], UTC) for path in ids]
    candidates = grouping.Candidates(
        asset_ids=ids,
        phashes=np.array([int(h.phash, 16) for _, h in hashed], dtype=np.uint64),
        pixels=np.array([h.pixels for _, h in hashed], dtype=np.int64),
        uploaded_at_us=np.array([int(m.timestamp() * 1_000_000) for m in mtimes], dtype=np.int64),
        pinned_at_us=np.zeros(len(ids), dtype=np.int64),
        titles=[Path(p).name for p in ids],
        prints=matching.columns([h for _, h in hashed]) if match == "verified" else None,
    )
    order = grouping.original_order(
        candidates.pinned_at_us, candidates.pixels, candidates.uploaded_at_us, ids
    )
    groups = pages.bank_order(
        candidates,
        grouping.with_reasons(
            candidates, grouping.find_sets(candidates, order, match, max_distance, threads=threads)
        ),
        sort,
    )
    docs: dict[str, dict[str, Any]] = {
        path: {
            "asset_id": path,
            "title": Path(path).name,
            "description": "",
            "tags": [],
            "width": h.width,
            "height": h.height,
            "uploaded_at": mtime,
            "phash": h.phash,
            "sha256": h.sha256 or None,  # none taken: no other file has its size
        }
        for (path, h), mtime in zip(hashed, mtimes, strict=True)
    }
    page = pages.build_page(
        request_id="scan",
        portal_id="local",
        match=match,
        max_distance=max_distance if match == "phash" else None,
        groups=groups,
        asset_ids=ids,
        docs=docs,
        total_sets=len(groups),
        page=1,
        pages=1,
    )
    return page.sets
