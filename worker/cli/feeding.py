"""`dupfinder backfill` and `dupfinder rehash`: feed existing assets to the backfill queue."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import IO, TYPE_CHECKING

from worker.cli.common import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, on_store, open_store
from worker.config import get_settings

if TYPE_CHECKING:
    from worker.store import AssetStore


def backfill_file(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    import pika.exceptions

    from schemas.contract import BACKFILL_ROUTE
    from schemas.publisher import PortalPublisher
    from worker.backfill import State, backfill, read_payloads, same_bytes_check
    from worker.core.errors import StoreUnavailable
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
        state.restart()
    if state.done:
        print(
            f"{args.file} was backfilled completely already ({state.path}); --restart to "
            "send it again"
        )
        return EXIT_OK
    total = None
    if not from_stdin:
        with open(args.file, encoding="utf-8", errors="surrogateescape") as counting:
            total = sum(1 for _ in counting)
    runner = asyncio.Runner()
    store: AssetStore | None = None
    known = None
    if not args.force:
        store = runner.run(open_store(settings))
        known = same_bytes_check(lambda portal, asset: runner.run(store.get(portal, asset)))
    progress = None if args.quiet else Progress()
    try:
        with (
            PortalPublisher(settings.amqp_url_with_defaults) as publisher,
            _text(sys.stdin.buffer)
            if from_stdin
            else open(args.file, encoding="utf-8", errors="surrogateescape", newline="") as stream,
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


def _text(stream: IO[bytes]) -> IO[str]:
    """Standard input as the file is read: bytes that are not UTF-8 refuse their own line."""
    return io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")


def rehash(args: argparse.Namespace) -> int:

    from schemas.contract import BACKFILL_ROUTE
    from schemas.messages import AssetUploaded
    from schemas.publisher import PortalPublisher
    from worker.core.errors import StoreUnavailable
    from worker.core.hashing import HASH_VERSION

    settings = get_settings()

    async def stale(store: AssetStore) -> list[dict[str, object]]:
        return [doc async for doc in store.stale_hashes(args.portal, HASH_VERSION)]

    try:
        docs = on_store(settings, stale)
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
