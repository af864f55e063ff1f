"""`dupfinder scan`: the core on local folders, no services needed."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING

from schemas.messages import Sort
from worker.cli.common import EXIT_FAILURES, EXIT_OK, EXIT_USAGE
from worker.config import get_settings

if TYPE_CHECKING:
    from schemas.events import SetMember
    from worker.scan import ScanResult


def scan(args: argparse.Namespace) -> int:
    from PIL import Image

    from schemas.messages import chosen_rule
    from worker.fetching import FetchLimits
    from worker.progress import Progress
    from worker.scan import scan

    settings = get_settings()
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"dupfinder scan: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    field, _, order = args.sort.partition(":")
    sort = Sort.model_validate({"field": field, "order": order or "desc"})
    if args.match == "verified" and args.max_distance is not None:
        print("dupfinder scan: --max-distance belongs to --match phash", file=sys.stderr)
        return EXIT_USAGE
    match, max_distance = chosen_rule(
        args.match,
        args.max_distance,
        default_match=settings.match,
        default_max_distance=settings.max_distance,
    )
    result = scan(
        args.paths,
        match=match,
        max_distance=max_distance,
        limits=FetchLimits(
            settings.max_source_bytes, settings.fetch_timeout_s, settings.fetch_connect_timeout_s
        ),
        max_pixels=settings.max_pixels,
        sort=sort,
        workers=args.workers or os.cpu_count() or 1,
        progress=None if args.quiet else Progress(),
    )
    for failure in result.failures:
        print(f"skipped {failure.path}: {failure.reason}: {failure.detail}", file=sys.stderr)
    if args.html is not None:
        from worker.report import write_report

        folder = write_report(
            args.html,
            result.sets,
            files=result.files,
            unreadable=len(result.failures),
            workers=args.workers or os.cpu_count() or 1,
        )
        print(f"wrote {args.html} (thumbnails in {folder})", file=sys.stderr)
    if args.json:
        body = {
            "files": result.files,
            "failed": [dataclasses.asdict(f) for f in result.failures],
            "sets": [s.model_dump(mode="json") for s in result.sets],
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")  # one write, not one a token
    else:
        _print_table(result)
    return EXIT_FAILURES if result.failures else EXIT_OK


#: What the table's words and letters mean, printed above it (and in `dupfinder scan --help`).
LEGEND = (
    "original: the copy to keep (most pixels, then oldest); identical: the same bytes; "
    "same_phash: the same perceptual hash; near: d= bits of hash apart, s= similarity (1 = the "
    "same picture); mirrored, rotated: a flipped or turned copy"
)


def _counted(count: int, thing: str) -> str:
    return f"{count} {thing}" if count == 1 else f"{count} {thing}s"


def _print_table(result: ScanResult) -> None:
    duplicates = sum(len(s.assets) - 1 for s in result.sets)
    if result.sets:
        print(LEGEND)
        print()
    for number, dup_set in enumerate(result.sets, start=1):
        print(f"set {number}: {len(dup_set.assets)} images")
        for member in dup_set.assets:
            mark = f"{'original':<20}" if member.original else _how(member)
            size = f"{member.width}x{member.height}"
            stamp = member.uploaded_at.strftime("%Y-%m-%d %H:%M")
            print(f"  {mark} {size:>11}  {stamp}  {member.asset_id}")
        print()
    print(
        f"{_counted(result.files, 'file')}, {len(result.failures)} unreadable, "
        f"{_counted(len(result.sets), 'duplicate set')}, {_counted(duplicates, 'duplicate')}"
    )


def _how(member: SetMember) -> str:
    """How a member matches its original, in a fixed-width column."""
    if member.match == "near":
        shown = f"near d={member.distance}"
        if member.similarity is not None:
            shown += f" s={member.similarity:.2f}"
        return f"{shown:<20}"
    return f"{member.match:<20}"
