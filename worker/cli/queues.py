"""`dupfinder dead-letters` and `dupfinder status`: what the queues hold, and acting on it."""

from __future__ import annotations

import argparse
import json
import sys

from worker.cli.common import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, on_store
from worker.config import get_settings


def dead_letters(args: argparse.Namespace) -> int:
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


def status(args: argparse.Namespace) -> int:

    import pika

    from schemas.contract import ROUTES, WAIT_TIERS_MS, dead_letter_queue, delay_queue, wait_queue
    from schemas.publisher import connect
    from worker.core.errors import StoreUnavailable
    from worker.deadletters import DeadLetterQueue, format_duration, now

    settings = get_settings()
    report: dict[str, object] = {"queues": {}, "portals": {}}
    queues: dict[str, dict[str, object]] = {}
    try:
        connection = connect(settings.amqp_url_with_defaults)
    except pika.exceptions.AMQPError as e:
        print(f"dupfinder status: RabbitMQ: {e!r}", file=sys.stderr)
        return EXIT_FAILURES
    try:
        for queue in sorted({route.queue_name for route in ROUTES.values()}):
            row: dict[str, object] = {}
            quorum = settings.queue_type == "quorum"
            waits = [wait_queue(queue, tier) for tier in WAIT_TIERS_MS] if quorum else []
            for key, name in (
                ("ready", queue),
                ("delayed", delay_queue(queue)),
                *(("delayed", wait) for wait in waits),  # quorum queues' delayed messages
                ("dead", dead_letter_queue(queue)),
            ):
                channel = connection.channel()
                try:
                    declared = channel.queue_declare(name, passive=True).method
                    known = row.get(key)
                    row[key] = declared.message_count + (known if isinstance(known, int) else 0)
                    if key == "ready":
                        row["consumers"] = declared.consumer_count
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    row.setdefault(key, None)  # not declared yet: no worker has started
            row["unacked"] = None
            if settings.management_url:
                held = _management_counts(settings.management_url, queue)
                held_delayed = _management_counts(settings.management_url, delay_queue(queue))
                row["unacked"] = held.get("messages_unacknowledged")
                if held_delayed and not waits:  # workers hold classic delays unacknowledged
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

    try:
        rows = on_store(settings, lambda store: store.state_counts(args.portal))
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
