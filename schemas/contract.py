"""Names that both sides of the wire must spell identically.

A queue or actor renamed here orphans every message already queued under the old name, so these
are versioned with the contract rather than derived from function names.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTRACT_VERSION = 1

ASSETS_QUEUE = "dupfinder.assets"
SEARCHES_QUEUE = "dupfinder.searches"
COMMANDS_QUEUE = "dupfinder.commands"
#: Uploads replayed in bulk by `dupfinder backfill`: same payload and code as live uploads, but a
#: queue of their own, so a backfill of a million assets never delays a live upload.
BACKFILL_QUEUE = "dupfinder.backfill"

#: Durable topic exchange the worker publishes every result event to; routing key = event type.
RESULTS_EXCHANGE = "dupfinder.results"


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


def queue_arguments(queue_name: str) -> dict[str, str]:
    """The `x-` arguments Dramatiq declares a work queue with.

    Any client that declares the queue first must use exactly these, or RabbitMQ refuses the
    other side's declaration with 406 PRECONDITION_FAILED.
    """
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(queue_name),
    }
