"""Names that both sides of the wire must spell identically.

A queue or actor renamed here orphans every message already queued under the old name, so these
are versioned with the contract rather than derived from function names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CONTRACT_VERSION = 2

ASSETS_QUEUE = "dupfinder.assets"
SEARCHES_QUEUE = "dupfinder.searches"
COMMANDS_QUEUE = "dupfinder.commands"
#: Uploads replayed in bulk by `dupfinder backfill`: same payload and code as live uploads, but a
#: queue of their own, so a backfill of a million assets never delays a live upload.
BACKFILL_QUEUE = "dupfinder.backfill"

#: Durable topic exchange the worker publishes every result event to, under
#: `result_routing_key`.
RESULTS_EXCHANGE = "dupfinder.results"

#: What a portal id may be from contract v2 on: it is the first word of every result's routing
#: key, so no dots and none of the topic wildcards `*` and `#`.
PORTAL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def result_routing_key(portal_id: str, event_type: str) -> str:
    """The routing key of a result event: `<portal_id>.<event type>`, e.g. `acme.asset.hashed`.

    A portal binds `<portal_id>.#`; `rabbitmqctl set_topic_permissions` with `^<portal_id>\\.`
    keeps its user from binding anything else.
    """
    return f"{portal_id}.{event_type}"


@dataclass(frozen=True)
class ActorRoute:
    """Where a payload travels: the Dramatiq actor that handles it and the queue it waits in."""

    actor_name: str
    queue_name: str


#: Payload class name -> route. Kept as names so this module imports nothing heavy.
ACTORS: dict[str, ActorRoute] = {
    "AssetUploaded": ActorRoute("asset_uploaded", ASSETS_QUEUE),
    "AssetRemoved": ActorRoute("asset_removed", ASSETS_QUEUE),
    "FindDuplicates": ActorRoute("find_duplicates", SEARCHES_QUEUE),
    "MakeOriginal": ActorRoute("make_original", COMMANDS_QUEUE),
    "DeleteDuplicates": ActorRoute("delete_duplicates", COMMANDS_QUEUE),
    "MarkDistinct": ActorRoute("mark_distinct", COMMANDS_QUEUE),
    "KeepSet": ActorRoute("keep_set", COMMANDS_QUEUE),
    "ForgetDecisions": ActorRoute("forget_decisions", COMMANDS_QUEUE),
}

#: The backfill route of `AssetUploaded` payloads.
BACKFILL_ROUTE = ActorRoute("backfill_asset", BACKFILL_QUEUE)

#: Every route, by actor name.
ROUTES: dict[str, ActorRoute] = {
    route.actor_name: route for route in (*ACTORS.values(), BACKFILL_ROUTE)
}


def dead_letter_queue(queue_name: str) -> str:
    """The queue Dramatiq dead-letters `queue_name` into (kept 7 days by default)."""
    return f"{queue_name}.XQ"


def delay_queue(queue_name: str) -> str:
    """The queue Dramatiq parks delayed retries of classic `queue_name` in (held unacknowledged
    by a worker until due)."""
    return f"{queue_name}.DQ"


#: How long RabbitMQ keeps a dead letter: Dramatiq declares every `<queue>.XQ` with this
#: `x-message-ttl` (its `dramatiq_dead_message_ttl`, 7 days), and a declaration without it fails.
DEAD_LETTER_TTL_MS = 7 * 24 * 60 * 60 * 1000

QueueType = Literal["classic", "quorum"]

#: Deliveries of one message a quorum work queue allows before it dead-letters the message to
#: `.XQ` (a message whose handling kills or stops its worker every time): RabbitMQ 4's default.
DEFAULT_DELIVERY_LIMIT = 20

#: The delivery limit of a quorum `.XQ`, which has nowhere to dead-letter to: high enough that
#: reading dead letters (each read returns them, which counts) never drops one. RabbitMQ 4 would
#: otherwise drop them after 20 reads.
DEAD_LETTER_DELIVERY_LIMIT = 1_000_000

#: The waits of a delayed message on quorum queues, each a queue of its own whose messages
#: expire after that long into the work queue (a fixed TTL per queue, so the first in is the
#: first due). A delay is rounded down to one of them: backoffs stay exponential, and nothing is
#: held unacknowledged while it waits.
WAIT_TIERS_MS = (250, 1_000, 4_000, 16_000, 64_000, 256_000)


def wait_queue(queue_name: str, tier_ms: int) -> str:
    """The quorum queue where delayed messages of `queue_name` wait `tier_ms`."""
    label = f"{tier_ms // 1000}s" if tier_ms % 1000 == 0 else f"{tier_ms}ms"
    return f"{queue_name}.DQ.{label}"


def wait_tier(delay_ms: int) -> int:
    """The wait a delay of `delay_ms` is given: the longest tier not above it (the shortest
    for shorter delays)."""
    fitting = [tier for tier in WAIT_TIERS_MS if tier <= delay_ms]
    return fitting[-1] if fitting else WAIT_TIERS_MS[0]


def queue_declarations(
    queue_name: str,
    queue_type: QueueType = "classic",
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> dict[str, dict[str, str | int]]:
    """Every queue behind a work queue (itself, `.DQ`, `.XQ`, and for quorum queues the wait
    queues) with the exact arguments the worker declares it with; a client that declares one
    of them must use these (all durable), or RabbitMQ refuses with 406 PRECONDITION_FAILED."""
    arguments = queue_arguments(queue_name, queue_type, delivery_limit)
    declarations: dict[str, dict[str, str | int]] = {
        queue_name: arguments,
        delay_queue(queue_name): dict(arguments),
        dead_letter_queue(queue_name): dead_letter_arguments(queue_type),
    }
    if queue_type == "quorum":
        for tier in WAIT_TIERS_MS:
            declarations[wait_queue(queue_name, tier)] = wait_arguments(queue_name, tier)
    return declarations


def queue_arguments(
    queue_name: str,
    queue_type: QueueType = "classic",
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> dict[str, str | int]:
    """The `x-` arguments a work queue (and its `.DQ`) is declared with.

    Classic: what Dramatiq itself declares. Quorum: replicated, dead letters copied to `.XQ`
    at least once (which needs `reject-publish` overflow), no priority argument (refused by
    quorum queues), and a delivery limit past which a message goes to `.XQ` as
    `delivery_limit`. Any client that declares the queue first must use exactly these, or
    RabbitMQ refuses the other side's declaration with 406 PRECONDITION_FAILED.
    """
    arguments: dict[str, str | int] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(queue_name),
    }
    if queue_type == "quorum":
        arguments.update({**_QUORUM, "x-delivery-limit": delivery_limit})
    return arguments


def dead_letter_arguments(queue_type: QueueType = "classic") -> dict[str, str | int]:
    """The arguments of a `.XQ`: a fixed TTL (dead letters expire in order), and on quorum
    queues a delivery limit no reader reaches."""
    arguments: dict[str, str | int] = {"x-message-ttl": DEAD_LETTER_TTL_MS}
    if queue_type == "quorum":
        arguments.update({"x-queue-type": "quorum", "x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT})
    return arguments


def wait_arguments(queue_name: str, tier_ms: int) -> dict[str, str | int]:
    """The arguments of a wait queue: its messages expire after `tier_ms` into the work queue,
    at least once."""
    return {
        **_QUORUM,
        "x-message-ttl": tier_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue_name,
    }


_QUORUM: dict[str, str | int] = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
