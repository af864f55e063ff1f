"""The `dupfinder` command: `worker` runs the service, `check` probes its services, `scan` runs
the core on local folders."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from schemas.messages import Sort
from worker.config import get_settings

if TYPE_CHECKING:
    from worker.scan import ScanResult

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _worker(args: argparse.Namespace) -> int:
    import dramatiq.cli

    settings = get_settings()
    argv = [
        "worker.app",
        "--processes",
        str(args.processes or settings.processes),
        "--threads",
        str(args.threads or settings.threads),
        *args.dramatiq_args,
    ]
    parsed = dramatiq.cli.make_argument_parser().parse_args(argv)
    return int(dramatiq.cli.main(parsed) or 0)


def _check(args: argparse.Namespace) -> int:
    import asyncio

    import pika

    from worker.errors import StoreUnavailable
    from worker.store import AssetStore

    settings = get_settings()
    failures = []
    try:
        pika.BlockingConnection(pika.URLParameters(settings.amqp_url_with_defaults)).close()
    except Exception as e:  # any failure to connect is the answer this command exists to give
        failures.append(f"RabbitMQ: {e!r}")

    async def ping() -> None:
        store = AssetStore.connect(
            settings.mongodb_url, settings.mongodb_database, timeout_ms=settings.mongodb_timeout_ms
        )
        try:
            await store.ping()
        finally:
            await store.close()

    try:
        asyncio.run(ping())
    except StoreUnavailable as e:
        failures.append(f"MongoDB: {e.detail}")
    for failure in failures:
        print(f"not ready: {failure}", file=sys.stderr)
    if not failures:
        print("ready: RabbitMQ and MongoDB answer")
    return EXIT_FAILURES if failures else EXIT_OK


def _scan(args: argparse.Namespace) -> int:
    from PIL import Image

    from worker.fetching import FetchLimits
    from worker.scan import Progress, scan

    settings = get_settings()
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"dupfinder scan: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    field, _, order = args.sort.partition(":")
    sort = Sort.model_validate({"field": field, "order": order or "desc"})
    result = scan(
        args.paths,
        max_distance=args.max_distance if args.max_distance is not None else settings.max_distance,
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
    if args.json:
        body = {
            "files": result.files,
            "failed": [dataclasses.asdict(f) for f in result.failures],
            "sets": [s.model_dump(mode="json") for s in result.sets],
        }
        json.dump(body, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(result)
    return EXIT_FAILURES if result.failures else EXIT_OK


def _print_table(result: ScanResult) -> None:
    duplicates = sum(len(s.assets) - 1 for s in result.sets)
    for number, dup_set in enumerate(result.sets, start=1):
        print(f"set {number}: {len(dup_set.assets)} images")
        for member in dup_set.assets:
            mark = "original " if member.original else f"d={member.distance:<6} "
            size = f"{member.width}x{member.height}"
            stamp = member.uploaded_at.strftime("%Y-%m-%d %H:%M")
            print(f"  {mark} {size:>11}  {stamp}  {member.asset_id}")
        print()
    print(
        f"{result.files} files, {len(result.failures)} unreadable, {len(result.sets)} duplicate "
        f"sets, {duplicates} duplicates"
    )


def _distance(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 32:
        raise argparse.ArgumentTypeError("must be between 0 and 32")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public for the tests and the docs)."""
    parser = argparse.ArgumentParser(
        prog="dupfinder", description="Duplicate-image finder for digital-asset portals."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser(
        "worker",
        help="run the RabbitMQ/MongoDB worker (configured by DUPFINDER_* variables)",
        description="Runs `dramatiq worker.app`; arguments after -- go to Dramatiq unchanged.",
    )
    worker.add_argument("--processes", type=int, help="worker processes (DUPFINDER_PROCESSES)")
    worker.add_argument("--threads", type=int, help="threads per process (DUPFINDER_THREADS)")
    worker.add_argument("dramatiq_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    worker.set_defaults(run=_worker)

    check = sub.add_parser(
        "check",
        help="exit 0 when RabbitMQ and MongoDB answer (a readiness probe)",
        description="Connects to RabbitMQ and pings MongoDB with the worker's settings; exit "
        "status 0 when both answer, 1 otherwise.",
    )
    check.set_defaults(run=_check)

    scan = sub.add_parser(
        "scan",
        help="find duplicate images in local folders, no services needed",
        description="Hashes every image under PATH... and prints the duplicate sets, originals "
        "first. Exit status 1 when some files could not be read, 2 on usage errors.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to scan")
    scan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    scan.add_argument(
        "--max-distance",
        type=_distance,
        metavar="N",
        help="Hamming radius, 0-32 (default DUPFINDER_MAX_DISTANCE, shipped 0)",
    )
    scan.add_argument(
        "--sort",
        default="uploaded_at:desc",
        choices=[f"{f}:{o}" for f in ("uploaded_at", "title", "pixels") for o in ("desc", "asc")],
        help="order of sets; uploaded_at is the file's modification time",
    )
    scan.add_argument("--workers", type=int, metavar="N", help="hashing processes (default: cores)")
    scan.add_argument("--quiet", action="store_true", help="no progress on stderr")
    scan.set_defaults(run=_scan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dupfinder` script."""
    args = build_parser().parse_args(argv)
    if args.command == "worker" and args.dramatiq_args[:1] == ["--"]:
        args.dramatiq_args = args.dramatiq_args[1:]
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
