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
    from schemas.events import SetMember
    from worker.config import Settings
    from worker.scan import ScanResult
    from worker.store import AssetStore

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

    settings = get_settings()
    failures = []
    try:
        pika.BlockingConnection(pika.URLParameters(settings.amqp_url_with_defaults)).close()
    except Exception as e:  # any failure to connect is the answer this command exists to give
        failures.append(f"RabbitMQ: {e!r}")

    async def ping() -> None:
        store = await _open_store(settings)  # pings
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


def _queue_name(text: str) -> str:
    from schemas.contract import ROUTES

    queues = {route.queue_name for route in ROUTES.values()}
    name = text if text.startswith("dupfinder.") else f"dupfinder.{text}"
    if name not in queues:
        raise argparse.ArgumentTypeError(
            f"not a dupfinder queue; one of {', '.join(sorted(queues))}"
        )
    return name


def _dead_letters(args: argparse.Namespace) -> int:
    import pika.exceptions

    from worker.deadletters import format_duration, now, open_dead_letters

    settings = get_settings()
    if args.action == "show" and not args.id:
        print("dupfinder dead-letters show: --id MESSAGE_ID is required", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "purge" and not args.yes and not sys.stdin.isatty():
        print(
            "dupfinder dead-letters purge: pass --yes to delete without a prompt",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        with open_dead_letters(settings.amqp_url_with_defaults, args.queue) as dlq:
            letters = dlq.read(portal=args.portal, reason=args.reason, limit=args.limit)
            if args.id:
                letters = [letter for letter in letters if letter.message_id == args.id]
            moment = now()
            if args.action in ("list", "show"):
                if args.json or args.action == "show":
                    rows = [
                        {
                            **letter.summary(moment),
                            **({"envelope": letter.envelope} if args.action == "show" else {}),
                        }
                        for letter in letters
                    ]
                    json.dump(rows, sys.stdout, indent=2, default=str)
                    sys.stdout.write("\n")
                else:
                    print(f"{len(letters)} dead letters in {dlq.xq} (kept 7 days, then dropped)")
                    for letter in letters:
                        print(
                            f"{letter.message_id}  age {format_duration(letter.age_s(moment))}"
                            f"  expires in {format_duration(letter.expires_in_s(moment))}"
                            f"  {letter.actor}  portal={letter.portal_id}  {letter.subject}"
                            f"\n    {letter.reason}"
                        )
                return EXIT_OK if letters or args.action == "list" else EXIT_FAILURES
            if args.action == "purge" and not args.yes:
                answer = input(f"delete {len(letters)} dead letters from {dlq.xq} for good? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    print("nothing deleted")
                    return EXIT_OK
            failed = 0
            for letter in letters:
                try:
                    if args.action == "redrive":
                        dlq.redrive(letter)
                    else:
                        dlq.purge(letter)
                except ValueError as e:
                    failed += 1
                    print(str(e), file=sys.stderr)
            done = len(letters) - failed
            verb = "re-drove" if args.action == "redrive" else "purged"
            print(f"{verb} {done} of {len(letters)} dead letters from {dlq.xq}")
            return EXIT_FAILURES if failed else EXIT_OK
    except pika.exceptions.AMQPError as e:
        print(f"dupfinder dead-letters: RabbitMQ: {e!r}", file=sys.stderr)
        return EXIT_FAILURES


def _management_counts(base_url: str, queue: str) -> dict[str, int]:
    """Counts of one queue from RabbitMQ's management API ({} when it does not answer)."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(base_url)
    netloc = parts.hostname or "localhost"
    if parts.port:
        netloc += f":{parts.port}"
    url = f"{parts.scheme}://{netloc}/api/queues/%2F/{urllib.parse.quote(queue, safe='')}"
    request = urllib.request.Request(url)
    if parts.username:
        token = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data = json.load(response)
    except (urllib.error.URLError, TimeoutError, ValueError):
        return {}
    return {k: int(v) for k, v in data.items() if k.startswith("messages") and isinstance(v, int)}


def _status(args: argparse.Namespace) -> int:
    import asyncio

    import pika

    from schemas.contract import ROUTES, dead_letter_queue, delay_queue
    from worker.deadletters import DeadLetterQueue, format_duration, now
    from worker.errors import StoreUnavailable

    settings = get_settings()
    report: dict[str, object] = {"queues": {}, "portals": {}}
    queues: dict[str, dict[str, object]] = {}
    try:
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url_with_defaults))
    except pika.exceptions.AMQPError as e:
        print(f"dupfinder status: RabbitMQ: {e!r}", file=sys.stderr)
        return EXIT_FAILURES
    try:
        for queue in sorted({route.queue_name for route in ROUTES.values()}):
            row: dict[str, object] = {}
            for key, name in (
                ("ready", queue),
                ("delayed", delay_queue(queue)),
                ("dead", dead_letter_queue(queue)),
            ):
                channel = connection.channel()
                try:
                    declared = channel.queue_declare(name, passive=True).method
                    row[key] = declared.message_count
                    if key == "ready":
                        row["consumers"] = declared.consumer_count
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    row[key] = None  # not declared yet: no worker has started
            row["unacked"] = None
            if settings.management_url:
                held = _management_counts(settings.management_url, queue)
                held_delayed = _management_counts(settings.management_url, delay_queue(queue))
                row["unacked"] = held.get("messages_unacknowledged")
                if held_delayed:  # workers hold due-later retries unacknowledged
                    row["delayed"] = held_delayed.get("messages")
            channel = connection.channel()
            oldest = None
            if row.get("dead"):
                letters = DeadLetterQueue(channel, queue).read(limit=1)
                if letters:
                    oldest = letters[0].age_s(now())
            channel.close()  # hands the peeked dead letter back
            row["oldest_dead_letter_age_s"] = None if oldest is None else round(oldest)
            queues[queue] = row
    finally:
        connection.close()
    report["queues"] = queues

    async def counts() -> list[dict[str, object]]:
        store = await _open_store(settings)
        try:
            return await store.state_counts(args.portal)
        finally:
            await store.close()

    try:
        rows = asyncio.run(counts())
    except StoreUnavailable as e:
        print(f"dupfinder status: MongoDB: {e.detail}", file=sys.stderr)
        return EXIT_FAILURES
    portals: dict[str, dict[str, object]] = {}
    for row in rows:
        portal = portals.setdefault(
            str(row["portal_id"]), {"hashed": 0, "pending": 0, "failed": {}, "deleted": 0}
        )
        if row["state"] == "failed":
            failed = portal["failed"]
            assert isinstance(failed, dict)
            failed[str(row["reason"])] = row["count"]
        else:
            portal[str(row["state"])] = row["count"]
    report["portals"] = portals
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    print(
        f"{'queue':<22} {'ready':>7} {'unacked':>8} {'delayed':>8} {'dead':>6} {'consumers':>9}"
        "  oldest dead"
    )
    for queue, row in queues.items():
        age = row["oldest_dead_letter_age_s"]
        unacked = "-" if row["unacked"] is None else row["unacked"]
        print(
            f"{queue:<22} {row['ready']!s:>7} {unacked!s:>8} {row['delayed']!s:>8} "
            f"{row['dead']!s:>6} {row.get('consumers', '-')!s:>9}  "
            f"{format_duration(float(age)) if isinstance(age, int) else '-'}"
        )
    print(f"\n{'portal':<24} {'hashed':>8} {'pending':>8} {'deleted':>8}  failed")
    for portal_id, portal in portals.items():
        failed = portal["failed"]
        assert isinstance(failed, dict)
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(failed.items()))
        print(
            f"{portal_id:<24} {portal['hashed']!s:>8} {portal['pending']!s:>8} "
            f"{portal['deleted']!s:>8}  {reasons or '-'}"
        )
    return EXIT_OK


def _backfill(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    import pika.exceptions

    from schemas.contract import BACKFILL_ROUTE
    from schemas.publisher import PortalPublisher
    from worker.backfill import State, backfill, read_payloads, same_bytes_check
    from worker.errors import StoreUnavailable
    from worker.progress import Progress

    settings = get_settings()
    from_stdin = args.file == "-"
    if from_stdin and not args.state:
        print(
            "dupfinder backfill: reading stdin needs --state FILE to be resumable", file=sys.stderr
        )
        return EXIT_USAGE
    if not from_stdin and not os.path.isfile(args.file):
        print(f"dupfinder backfill: no such file: {args.file}", file=sys.stderr)
        return EXIT_USAGE
    fmt = args.format
    if fmt == "auto":
        fmt = "csv" if args.file.lower().endswith(".csv") else "jsonl"
    state = State(Path(args.state or args.file + ".backfill-state"))
    if args.restart:
        state.line, state.done = 0, False
    if state.done:
        print(
            f"{args.file} was backfilled completely already ({state.path}); --restart to "
            "send it again"
        )
        return EXIT_OK
    total = None
    if not from_stdin:
        with open(args.file, encoding="utf-8") as counting:
            total = sum(1 for _ in counting)
    runner = asyncio.Runner()
    store: AssetStore | None = None
    known = None
    if not args.force:
        store = runner.run(_open_store(settings))
        known = same_bytes_check(lambda portal, asset: runner.run(store.get(portal, asset)))
    progress = None if args.quiet else Progress()
    try:
        with (
            PortalPublisher(settings.amqp_url_with_defaults) as publisher,
            sys.stdin if from_stdin else open(args.file, encoding="utf-8") as stream,
        ):
            report = backfill(
                read_payloads(stream, fmt),
                lambda upload: publisher.publish(upload, route=BACKFILL_ROUTE),
                state,
                known=known,
                rate_per_s=args.rate,
                progress=None
                if progress is None
                else (lambda line: progress(line, total, "read", "lines")),
            )
    except (pika.exceptions.AMQPError, StoreUnavailable) as e:
        print(
            f"dupfinder backfill: stopped at line {state.line}, resumable: {e!r}", file=sys.stderr
        )
        state.save()
        return EXIT_FAILURES
    finally:
        if store is not None:
            runner.run(store.close())
        runner.close()
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(
            f"sent {report.sent}, skipped {report.skipped}"
            + "".join(f" ({n} {why})" for why, n in report.skip_reasons.items())
            + f", refused {len(report.refused)}"
            + (f"; resumed after line {report.resumed_from}" if report.resumed_from else "")
        )
        for number, reason in report.refused:
            print(f"  line {number}: {reason}")
    return EXIT_FAILURES if report.refused else EXIT_OK


async def _open_store(settings: Settings) -> AssetStore:
    """A store on the configured database, pinged so that an outage is reported at once."""
    from worker.store import AssetStore

    store = AssetStore.from_settings(settings)
    try:
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store


def _rehash(args: argparse.Namespace) -> int:
    import asyncio

    from schemas.contract import BACKFILL_ROUTE
    from schemas.messages import AssetUploaded
    from schemas.publisher import PortalPublisher
    from worker.errors import StoreUnavailable
    from worker.hashing import HASH_VERSION

    settings = get_settings()

    async def stale() -> list[dict[str, object]]:
        store = await _open_store(settings)
        try:
            return [doc async for doc in store.stale_hashes(args.portal, HASH_VERSION)]
        finally:
            await store.close()

    try:
        docs = asyncio.run(stale())
    except StoreUnavailable as e:
        print(f"dupfinder rehash: MongoDB: {e.detail}", file=sys.stderr)
        return EXIT_FAILURES
    with PortalPublisher(settings.amqp_url_with_defaults) as publisher:
        for doc in docs:
            publisher.publish(AssetUploaded.model_validate(doc), route=BACKFILL_ROUTE)
    print(
        f"re-enqueued {len(docs)} assets of portal {args.portal} hashed by a method older than "
        f"version {HASH_VERSION}"
    )
    return EXIT_OK


def _scan(args: argparse.Namespace) -> int:
    from PIL import Image

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
    result = scan(
        args.paths,
        match=args.match or settings.match,
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
            mark = f"{'original':<20}" if member.original else _how(member)
            size = f"{member.width}x{member.height}"
            stamp = member.uploaded_at.strftime("%Y-%m-%d %H:%M")
            print(f"  {mark} {size:>11}  {stamp}  {member.asset_id}")
        print()
    print(
        f"{result.files} files, {len(result.failures)} unreadable, {len(result.sets)} duplicate "
        f"sets, {duplicates} duplicates"
    )


def _how(member: SetMember) -> str:
    """How a member matches its original, in a fixed-width column."""
    if member.match == "near":
        shown = f"near d={member.distance}"
        if member.similarity is not None:
            shown += f" s={member.similarity:.2f}"
        return f"{shown:<20}"
    return f"{member.match:<20}"


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
    dead.set_defaults(run=_dead_letters)

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
    status.set_defaults(run=_status)

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
    fill.set_defaults(run=_backfill)

    rehash = sub.add_parser(
        "rehash",
        help="re-enqueue a portal's assets whose hashes an older method made",
        description="Finds the portal's hashed assets whose stored hash provenance has another "
        "method version than this code's, and publishes their uploads to the backfill queue; the "
        "worker then hashes them again even though their bytes did not change.",
    )
    rehash.add_argument("--portal", required=True)
    rehash.set_defaults(run=_rehash)

    scan = sub.add_parser(
        "scan",
        help="find duplicate images in local folders, no services needed",
        description="Hashes every image under PATH... and prints the duplicate sets, originals "
        "first. Exit status 1 when some files could not be read, 2 on usage errors.",
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
        help="Hamming radius of the phash rule, 0-32 (default DUPFINDER_MAX_DISTANCE, shipped 0)",
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
