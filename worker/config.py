"""All configuration, from environment variables prefixed `DUPFINDER_` (see the README table).

Durations carry their unit in the name. The settings object is validated once and fails fast on
nonsense, rather than letting a worker start with a retry budget that outlives RabbitMQ's consumer
timeout.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.contract import DEFAULT_DELIVERY_LIMIT, PORTAL_ID_PATTERN, QueueType

#: RabbitMQ closes a channel whose deliveries stay unacked this long (its default), redelivering
#: everything it held; delayed retries are held unacked, so backoffs must stay well below it.
RABBITMQ_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000


class Settings(BaseSettings):
    """The worker's settings; each field is one `DUPFINDER_<NAME>` variable."""

    model_config = SettingsConfigDict(env_prefix="DUPFINDER_", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    """RabbitMQ URL, or the URLs of a cluster's nodes, comma-separated: each connection takes
    the first node that answers, and the next one when its node goes away. `heartbeat` and
    `blocked_connection_timeout` are added to each when absent."""
    queue_type: QueueType = "classic"
    """`quorum` declares every queue replicated across a RabbitMQ cluster (README: Scaling
    out); `classic` as before. Portals that declare the queues must use the same type."""
    delivery_limit: Annotated[int, Field(ge=2, le=1000)] = DEFAULT_DELIVERY_LIMIT
    """Quorum queues only: deliveries of one message (each crash or stop of the worker that
    held it counts) before it is dead-lettered to `.XQ` as `delivery_limit`."""
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    """MongoDB URL (a replica set's: `mongodb://a,b,c/?replicaSet=rs0`)."""
    write_batch: Annotated[int, Field(ge=1, le=1000)] = 64
    """Most uploads' writes one worker process sends MongoDB in one request (1 = each alone)."""
    write_window_ms: Annotated[float, Field(ge=0, le=1000)] = 200.0
    """How long an upload's write waits for the other uploads of its process to share its
    request (worker.batching); it goes at once when no other is on its way but those the hash
    threads may hold."""
    pending_after_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    """A first upload still being fetched or hashed after this long is recorded as `pending`
    (for `dupfinder status`); one done sooner is written once, hashed or failed. 0 records
    every first upload as pending at once (a second write each)."""
    mongodb_write_concern: Literal["majority", "1"] = "majority"
    """Write concern of every write: `majority` survives the loss of a replica set's primary
    (a write acknowledged by it alone may be rolled back); `1` for a single server."""
    mongodb_database: str = "dupfinder"
    """Database holding the `assets` and `commands` collections."""
    mongodb_timeout_ms: Annotated[int, Field(ge=100)] = 5000
    """Server selection and socket timeout: an outage becomes a retry, not a stall."""

    match: Literal["phash", "verified"] = "verified"
    """Default matching rule of `find-duplicates` and `delete-duplicates` (README: Matching)."""
    max_distance: Annotated[int, Field(ge=0, le=32)] = 0
    """Default Hamming radius of the `phash` rule (0 = equal pHashes, as the product we
    imitate)."""
    search_threads: Annotated[int, Field(ge=1, le=64)] = max(1, min(4, os.cpu_count() or 1))
    """Threads one `find-duplicates` search uses for its index probes (compiled, GIL released)."""
    max_pixels: Annotated[int, Field(ge=1)] = 150_000_000
    """Images with more pixels are refused as `too_large` before decoding (decompression bombs)."""
    max_source_bytes: Annotated[int, Field(ge=1)] = 256 * 1024 * 1024
    """Sources larger than this are refused as `too_large` without reading them whole."""
    decode_memory_mb: Annotated[int, Field(ge=16)] = 768
    """Memory the decodes of one worker process may hold at once, by estimate: an image that
    needs more is `too_large`; one that does not fit beside the decodes in progress waits a
    moment, then is retried (`memory_busy`). Sized so that two processes fit a 2 GiB container
    with every image under `max_pixels` (150 M RGBA pixels need about 750 MB)."""
    fetch_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Deadline for reading one source in full (a server that streams forever is cut off)."""
    fetch_connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """Deadline for connecting to an HTTP source."""
    source_roots: Annotated[tuple[Path, ...] | None, NoDecode] = None
    """Comma-separated folders local sources must lie in (links resolved); unset = anywhere."""
    source_hosts: Annotated[tuple[str, ...] | None, NoDecode] = None
    """Comma-separated host names or address ranges (CIDR) URL sources may name; unset = any
    host but link-local and cloud-metadata addresses, which are refused in every case."""

    portal_users: Annotated[dict[str, str] | None, NoDecode] = None
    """Comma-separated `user=portal_id` pairs (`user=*` for a trusted back office): when set, a
    message has an effect only if its AMQP `user_id` names a user allowed for its `portal_id`
    (RabbitMQ refuses a `user_id` that is not the publishing connection's login); others are
    dead-lettered as `forbidden`. Unset = any publisher may act for any portal."""

    processes: Annotated[int, Field(ge=1)] = max(1, os.cpu_count() or 1)
    """Worker processes started by `dupfinder worker`."""
    threads: Annotated[int, Field(ge=1)] = 8
    """Dramatiq worker threads per process (messages in flight per process)."""
    hash_threads: Annotated[int, Field(ge=1)] = 2
    """Threads per process that fetch and decode images, off the event loop."""

    max_retries: Annotated[int, Field(ge=0, le=50)] = 10
    """Attempts after the first for transient faults, then the message is dead-lettered."""
    min_backoff_ms: Annotated[int, Field(ge=1)] = 1000
    """First retry delay; it doubles each attempt (with jitter)."""
    max_backoff_ms: Annotated[int, Field(ge=1)] = 5 * 60 * 1000
    """Longest retry delay; must stay well under RabbitMQ's 30-minute consumer timeout."""
    time_limit_ms: Annotated[int, Field(ge=1000)] = 10 * 60 * 1000
    """Longest one message may run before Dramatiq interrupts it."""
    command_lock_ttl_ms: Annotated[int, Field(ge=1000)] = 60_000
    """How long a crashed worker's per-portal command lock blocks others."""
    stop_grace_s: Annotated[float, Field(gt=0, le=3600)] = 25.0
    """After SIGTERM, how long in-flight messages may take to finish before the process exits
    anyway, leaving them unacknowledged for redelivery (keep it under the orchestrator's own
    grace: Kubernetes waits 30 s, Docker 10 s unless told otherwise)."""

    management_url: str | None = None
    """RabbitMQ management API (e.g. `http://guest:guest@rabbitmq:15672`): lets `dupfinder
    status` count unacknowledged and worker-held delayed messages, which AMQP cannot see."""
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9200
    """First port of the worker processes' /metrics, /livez and /readyz (0 = any free port)."""
    liveness_timeout_s: Annotated[float, Field(gt=0)] = 660.0
    """/livez fails when messages are in flight and none finished for this long."""
    hash_time_s: Annotated[float, Field(gt=0)] = 120.0
    """Longest that decoding and hashing one image may take: /livez fails when a hash thread
    has been busy with one image for longer than this plus `fetch_timeout_s`."""
    log_format: Literal["json", "text"] = "json"
    """Worker logs: one JSON object per line, or Dramatiq's plain text."""

    searches_per_portal: Annotated[int, Field(ge=0, le=64)] = 1
    """Searches of one portal that run at once, across every worker process; a portal's
    further searches wait in the delay queue for their turn, so its backlog never takes the
    threads that other portals' searches need (0 = no cap)."""
    search_cache_mb: Annotated[int, Field(ge=0, le=1024 * 1024)] = 1024
    """Memory one worker process may hold, by estimate, of the search columns of the portals it
    searched last (about 400 bytes an asset), refreshed before each search from what changed
    since (worker.column_cache); 0 = read every search's columns from MongoDB."""
    search_cache_lag_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    """How far back before its previous read a refresh of cached columns reads changes again:
    the bound on clock differences between worker hosts and on a write's time in flight."""
    page_size: Annotated[int, Field(ge=1, le=500)] = 500
    """Duplicate sets per `duplicates.found` message."""
    log_level: str = "INFO"
    """Python logging level of the worker."""

    @field_validator("source_roots", "source_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            items = tuple(item.strip() for item in value.split(",") if item.strip())
            return items or None
        return value

    @field_validator("portal_users", mode="before")
    @classmethod
    def _user_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in (i.strip() for i in value.split(",") if i.strip()):
            user, _, portal = (part.strip() for part in item.partition("="))
            if not user or not portal:
                raise ValueError(f"{item!r} is not user=portal_id")
            if portal != "*" and not re.fullmatch(PORTAL_ID_PATTERN, portal):
                raise ValueError(f"{portal!r} is not a portal id (1-64 of A-Z a-z 0-9 - _)")
            if pairs.get(user, portal) != portal:
                raise ValueError(f"user {user!r} is given two portals")
            pairs[user] = portal
        return pairs or None

    @field_validator("source_roots", mode="after")
    @classmethod
    def _absolute_roots(cls, roots: tuple[Path, ...] | None) -> tuple[Path, ...] | None:
        if roots is None:
            return None
        if not all(root.is_absolute() for root in roots):
            raise ValueError("source roots must be absolute paths")
        return tuple(Path(os.path.realpath(root)) for root in roots)

    @model_validator(mode="after")
    def _backoff_within_consumer_timeout(self) -> Settings:
        if self.min_backoff_ms > self.max_backoff_ms:
            raise ValueError("min_backoff_ms exceeds max_backoff_ms")
        if self.max_backoff_ms >= RABBITMQ_CONSUMER_TIMEOUT_MS // 2:
            raise ValueError(
                "max_backoff_ms must stay well under RabbitMQ's 30 min consumer timeout"
            )
        if self.time_limit_ms >= RABBITMQ_CONSUMER_TIMEOUT_MS // 2:
            raise ValueError(
                "time_limit_ms must stay well under RabbitMQ's 30 min consumer timeout"
            )
        return self

    @field_validator("amqp_url")
    @classmethod
    def _node_urls(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("amqp://", "amqps://")):
                raise ValueError(f"{url.strip()!r} is not an amqp:// or amqps:// URL")
        return value

    @property
    def amqp_url_with_defaults(self) -> str:
        """`amqp_url` with heartbeats and a blocked-connection timeout on each node's URL (see
        the publisher)."""
        # Imported here: the publisher brings pika, which `dupfinder scan` never needs.
        from schemas.publisher import with_connection_defaults

        return with_connection_defaults(self.amqp_url)


class SettingsError(Exception):
    """The environment holds settings the worker cannot run with; `lines` says which, one line
    per variable, with its name and what it may be."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        name = f"DUPFINDER_{field.upper()}" if field else "the DUPFINDER_ settings"
        given = os.environ.get(name) if field else None
        shown = f"={given!r}" if given is not None and len(given) <= 80 else ""
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{name}{shown}: {message}")
    return lines


def load_settings() -> Settings:
    """The settings from the environment; `SettingsError` names every bad variable."""
    try:
        return Settings()
    except ValidationError as e:
        raise SettingsError(_problems(e)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()
