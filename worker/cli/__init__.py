"""The `dupfinder` command: `worker` runs the service, `check` probes its services, `scan` runs
the core on local folders, and the rest operate the queues and the backfill.

One module per group of commands; each imports what it needs when it runs, so `--help` and the
argument parser stay quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from worker.cli import feeding, queues, scanning, service
from worker.cli.common import EXIT_USAGE, PrintableStream, leave, printable
from worker.config import SettingsError, get_settings


def _queue_name(text: str) -> str:
    from schemas.contract import ROUTES

    queues = {route.queue_name for route in ROUTES.values()}
    name = text if text.startswith("dupfinder.") else f"dupfinder.{text}"
    if name not in queues:
        raise argparse.ArgumentTypeError(
            f"not a dupfinder queue; one of {', '.join(sorted(queues))}"
        )
    return name


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
    worker.add_argument(
        "--embedded",
        action="store_true",
        help="for trying it out: run an embedded MongoDB-protocol server (SecantusDB) instead "
        "of connecting to DUPFINDER_MONGODB_URL",
    )
    worker.add_argument(
        "--data",
        type=Path,
        default=Path("dupfinder-data"),
        metavar="DIR",
        help="with --embedded: where its data lives (default: ./dupfinder-data)",
    )
    worker.add_argument("dramatiq_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    worker.set_defaults(run=service.worker)

    check = sub.add_parser(
        "check",
        help="exit 0 when RabbitMQ and MongoDB answer (a readiness probe)",
        description="Connects to RabbitMQ and pings MongoDB with the worker's settings; exit "
        "status 0 when both answer, 1 otherwise.",
    )
    check.set_defaults(run=service.check)

    dead = sub.add_parser(
        "dead-letters",
        help="list, show, re-drive or purge dead-lettered messages",
        description="Dead letters stay in <queue>.XQ for 7 days, then RabbitMQ drops them. "
        "Reading never removes them; redrive publishes each back to its queue with its retries "
        "reset and its message_id kept, and deletes the dead letter only after RabbitMQ "
        "confirmed the copy. Exit status 0, 1 on failures, 2 on usage errors.",
    )
    dead.add_argument("action", choices=["list", "show", "redrive", "purge"])
    dead.add_argument(
        "--queue",
        required=True,
        type=_queue_name,
        help="assets, searches or commands (or the full queue name)",
    )
    dead.add_argument("--portal", help="only messages of this portal")
    dead.add_argument("--reason", help="only messages whose reason contains this text")
    dead.add_argument("--id", help="only the message with this message_id")
    dead.add_argument("--limit", type=int, default=10_000, help="read at most this many")
    dead.add_argument("--json", action="store_true", help="list as JSON")
    dead.add_argument("--yes", action="store_true", help="purge without asking")
    dead.set_defaults(run=queues.dead_letters)

    status = sub.add_parser(
        "status",
        help="queue depths, dead letters and per-portal asset counts",
        description="Per queue: ready, delayed (waiting retries) and dead-lettered messages, "
        "consumers, and the age of the oldest dead letter. Per portal: assets hashed, deleted "
        "and failed by reason. Messages a worker holds unacknowledged are not counted (RabbitMQ "
        "reports them only through its management API).",
    )
    status.add_argument("--portal", help="only this portal's assets")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(run=queues.status)

    fill = sub.add_parser(
        "backfill",
        help="publish AssetUploaded payloads from a file to the backfill queue",
        description="FILE holds one AssetUploaded payload per line (JSON Lines), or a CSV with "
        "the same columns (tags separated by ';' or as a JSON list); '-' reads stdin. Each "
        "message goes to dupfinder.backfill with publisher confirms. Assets already hashed from "
        "the same bytes (local sources) and deleted assets are skipped unless --force. The line "
        "reached is kept in FILE.backfill-state, so an interrupted run resumes. Exit status 0, "
        "1 when lines were refused or the run stopped, 2 on usage errors.",
    )
    fill.add_argument("file", metavar="FILE")
    fill.add_argument("--format", choices=["auto", "jsonl", "csv"], default="auto")
    fill.add_argument("--rate", type=float, metavar="N", help="at most N messages a second")
    fill.add_argument("--force", action="store_true", help="send even assets already hashed")
    fill.add_argument("--state", metavar="PATH", help="where to record progress")
    fill.add_argument("--restart", action="store_true", help="ignore recorded progress")
    fill.add_argument("--json", action="store_true", help="print the summary as JSON")
    fill.add_argument("--quiet", action="store_true", help="no progress on stderr")
    fill.set_defaults(run=feeding.backfill_file)

    rehash = sub.add_parser(
        "rehash",
        help="re-enqueue a portal's assets whose hashes an older method made",
        description="Finds the portal's hashed assets whose stored hash provenance has another "
        "method version than this code's, and publishes their uploads to the backfill queue; the "
        "worker then hashes them again even though their bytes did not change.",
    )
    rehash.add_argument("--portal", required=True)
    rehash.set_defaults(run=feeding.rehash)

    scan = sub.add_parser(
        "scan",
        help="find duplicate images in local folders, no services needed",
        description="Hashes every image under PATH... and prints the duplicate sets, originals "
        "first. Exit status 1 when some files could not be read, 2 on usage errors. In the "
        "table: " + scanning.LEGEND + ".",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to scan")
    scan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    scan.add_argument(
        "--match",
        choices=["phash", "verified"],
        help="matching rule (default DUPFINDER_MATCH, shipped verified)",
    )
    scan.add_argument(
        "--max-distance",
        type=_distance,
        metavar="N",
        help="Hamming radius of the phash rule, 0-32; alone it means --match phash "
        "(default DUPFINDER_MAX_DISTANCE, shipped 0)",
    )
    scan.add_argument(
        "--sort",
        default="uploaded_at:desc",
        choices=[f"{f}:{o}" for f in ("uploaded_at", "title", "pixels") for o in ("desc", "asc")],
        help="order of sets; uploaded_at is the file's modification time",
    )
    scan.add_argument("--workers", type=int, metavar="N", help="hashing processes (default: cores)")
    scan.add_argument("--quiet", action="store_true", help="no progress on stderr")
    scan.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write the sets as a page to look at, thumbnails in FILE's <name>_files/",
    )
    scan.set_defaults(run=scanning.scan)
    return parser


def run() -> NoReturn:
    """Entry point of the `dupfinder` script (and of `python -m worker.cli`): `main`, then an
    exit that skips the interpreter's teardown (`leave`) once a command other than `worker`
    is done."""
    sys.exit(main(at_exit=leave))


def main(
    argv: Sequence[str] | None = None, *, at_exit: Callable[[int], NoReturn] | None = None
) -> int:
    """The `dupfinder` command: parse, check the settings, run. Returns the exit status, or
    hands it to `at_exit` (the script's quick exit) when a command other than `worker` is
    done."""
    args = build_parser().parse_args(argv)
    try:
        get_settings()
    except SettingsError as e:
        for line in e.lines:
            print(f"dupfinder: {printable(line)}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "worker":
        if args.dramatiq_args[:1] == ["--"]:
            args.dramatiq_args = args.dramatiq_args[1:]
        return int(args.run(args))
    # Operators' commands print tenant-supplied text: escape what a terminal would act on.
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(stdout), PrintableStream(stderr)
    try:
        code = int(args.run(args))
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    if at_exit is not None:
        at_exit(code)
    return code
