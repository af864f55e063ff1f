"""`dupfinder worker` runs the service; `dupfinder check` probes what it depends on."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from worker.cli.common import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, on_store
from worker.config import get_settings
from worker.readiness import unreachable

if TYPE_CHECKING:
    from worker.store import AssetStore


def worker(args: argparse.Namespace) -> int:
    if not args.embedded:
        return _run_worker(args)
    from worker.embedded import WARNING, EmbeddedUnavailable, embedded_database

    try:
        with embedded_database(args.data.resolve()) as url:
            # The worker processes read their settings from the environment they inherit.
            os.environ["DUPFINDER_MONGODB_URL"] = url
            get_settings.cache_clear()
            print(WARNING.format(url=url, folder=args.data.resolve()), file=sys.stderr)
            return _run_worker(args)
    except EmbeddedUnavailable as e:
        print(f"dupfinder: {e}", file=sys.stderr)
        return EXIT_FAILURES


def _run_worker(args: argparse.Namespace) -> int:
    import dramatiq.cli
    import pika.exceptions

    from worker.declarations import QueueMismatch, declare_queues

    settings = get_settings()
    try:
        declare_queues(settings)
    except QueueMismatch as e:
        print(f"dupfinder worker: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (pika.exceptions.AMQPError, OSError) as e:
        # Not fatal: the worker processes connect (and declare) as soon as RabbitMQ answers.
        print(
            f"dupfinder worker: {unreachable('RabbitMQ', settings.amqp_url, e)}; "
            "starting anyway, the processes connect when it answers",
            file=sys.stderr,
        )
    argv = [
        "worker.app",
        "--processes",
        str(args.processes or settings.processes),
        "--threads",
        str(args.threads or settings.threads),
        # The graceful stop gives up waiting a little before the process's own deadline.
        "--worker-shutdown-timeout",
        str(int(settings.stop_grace_s * 800)),
        *args.dramatiq_args,
    ]
    parsed = dramatiq.cli.make_argument_parser().parse_args(argv)
    return int(dramatiq.cli.main(parsed) or 0)


def check(args: argparse.Namespace) -> int:
    from worker.core.errors import StoreUnavailable
    from worker.declarations import QueueMismatch, declare_queues

    settings = get_settings()
    failures = []
    try:
        declare_queues(settings)
    except QueueMismatch as e:
        failures.append(str(e))
    except Exception as e:  # any failure to connect is the answer this command exists to give
        failures.append(unreachable("RabbitMQ", settings.amqp_url, e))

    try:
        on_store(settings, _opened)  # opening pings
    except StoreUnavailable as e:
        failures.append(unreachable("MongoDB", settings.mongodb_url, e))
    for failure in failures:
        print(f"not ready: {failure}", file=sys.stderr)
    if not failures:
        print("ready: RabbitMQ and MongoDB answer")
    return EXIT_FAILURES if failures else EXIT_OK


async def _opened(store: AssetStore) -> None:
    """Nothing more to do once the store is open: opening pinged it."""
