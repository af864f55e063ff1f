"""Names that both sides of the wire must spell identically.

A queue or actor renamed here orphans every message already queued under the old name, so these
are versioned with the contract rather than derived from function names.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """The queue Dramatiq parks delayed retries of `queue_name` in."""
    return f"{queue_name}.DQ"


#: How long RabbitMQ keeps a dead letter: Dramatiq declares every `<queue>.XQ` with this
#: `x-message-ttl` (its `dramatiq_dead_message_ttl`, 7 days), and a declaration without it fails.
DEAD_LETTER_TTL_MS = 7 * 24 * 60 * 60 * 1000


def queue_declarations(queue_name: str) -> dict[str, dict[str, str | int]]:
    """Every queue behind a work queue (itself, `.DQ`, `.XQ`) with the exact arguments the
    worker declares it with; a client that declares one of them must use these (all durable),
    or RabbitMQ refuses with 406 PRECONDITION_FAILED."""
    arguments: dict[str, str | int] = {**queue_arguments(queue_name)}
    return {
        queue_name: arguments,
        delay_queue(queue_name): dict(arguments),
        dead_letter_queue(queue_name): {"x-message-ttl": DEAD_LETTER_TTL_MS},
    }


def queue_arguments(queue_name: str) -> dict[str, str]:
    """The `x-` arguments Dramatiq declares a work queue with.

    Any client that declares the queue first must use exactly these, or RabbitMQ refuses the
    other side's declaration with 406 PRECONDITION_FAILED.
    """
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(queue_name),
    }
