"""Dead letters: what is in a `<queue>.XQ`, why it died, and putting it back or away.

Messages are read with `basic_get` and held unacknowledged while a command looks at them; what
is not re-driven or purged is handed back (requeued) when the channel closes, so looking never
loses a message. A re-drive publishes a copy with publisher confirms and acknowledges the dead
letter only after RabbitMQ confirmed the copy: a crash in between duplicates, never loses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pydantic import ValidationError

from schemas import messages
from schemas.contract import ACTORS, BACKFILL_ROUTE, dead_letter_queue
from schemas.envelope import Envelope
from schemas.publisher import amqp_login, node_parameters
from worker.broker import DEAD_AT_HEADER, DETAIL_HEADER, REASON_HEADER
from worker.core.errors import describe

#: How long RabbitMQ keeps a dead letter (Dramatiq declares every XQ with this TTL, 7 days).
DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000
_RETRY_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")
_ID_FIELDS = ("asset_id", "request_id", "command_id")


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message and what can be told about it."""

    tag: int
    body: bytes
    died_at: datetime | None
    envelope: dict[str, Any] | None
    reason: str

    @property
    def message_id(self) -> str:
        return str((self.envelope or {}).get("message_id", "?"))

    @property
    def actor(self) -> str:
        return str((self.envelope or {}).get("actor_name", "?"))

    @property
    def payload(self) -> dict[str, Any]:
        args = (self.envelope or {}).get("args")
        if isinstance(args, list) and args and isinstance(args[0], dict):
            return args[0]
        return {}

    @property
    def portal_id(self) -> str:
        return str(self.payload.get("portal_id", "?"))

    @property
    def subject(self) -> str:
        """The asset, request or command the message was about."""
        for field in _ID_FIELDS:
            if field in self.payload:
                return f"{field}={self.payload[field]}"
        return "?"

    def age_s(self, now: datetime) -> float:
        return (now - self.died_at).total_seconds() if self.died_at else 0.0

    def expires_in_s(self, now: datetime) -> float:
        return DEAD_MESSAGE_TTL_MS / 1000 - self.age_s(now)

    def summary(self, now: datetime) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "actor": self.actor,
            "portal_id": self.portal_id,
            "subject": self.subject,
            "reason": self.reason,
            "died_at": self.died_at.isoformat() if self.died_at else None,
            "age_s": round(self.age_s(now)),
            "expires_in_s": round(self.expires_in_s(now)),
        }


def death_reason(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """Why a body was dead-lettered, as far as the body itself tells."""
    try:
        envelope = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "not UTF-8 JSON"
    if not isinstance(envelope, dict):
        return None, "not a JSON object"
    try:
        Envelope.model_validate(envelope)
    except ValidationError as e:
        return envelope, "malformed envelope: " + describe(e)
    routes = {route.actor_name: (name, route) for name, route in ACTORS.items()}
    routes[BACKFILL_ROUTE.actor_name] = ("AssetUploaded", BACKFILL_ROUTE)
    if envelope["actor_name"] not in routes:
        return envelope, f"unknown actor {envelope['actor_name']!r}"
    model_name, route = routes[envelope["actor_name"]]
    if route.queue_name != envelope["queue_name"]:
        return envelope, f"actor {route.actor_name!r} does not consume {envelope['queue_name']!r}"
    try:
        getattr(messages, model_name).model_validate(envelope["args"][0])
    except ValidationError as e:
        return envelope, "invalid payload: " + describe(e)
    traceback = envelope["options"].get("traceback")
    if traceback:
        retries = envelope["options"].get("retries", 0)
        last = traceback.strip().splitlines()[-1]
        return envelope, f"gave up after {retries} retries: {last}"
    return envelope, "failed permanently on its first attempt (see the asset's failure reason)"


def _cause(properties: pika.BasicProperties) -> str | None:
    """The cause a dead letter made by the worker carries in its headers, if any; or the one
    RabbitMQ gave when it dead-lettered the message itself for a reason the body cannot tell
    (a quorum queue's delivery limit)."""
    headers = properties.headers or {}
    reason = headers.get(REASON_HEADER)
    deaths = headers.get("x-death") or []
    last = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    if reason is None and _text(last.get("reason", "")) == "delivery_limit":
        queue = _text(last.get("queue", "its queue"))
        return (
            f"delivery_limit: delivered too often by {queue} (each worker that took it "
            "crashed or stopped before it finished; see the worker logs for its id)"
        )
    if reason is None:
        return None
    detail = headers.get(DETAIL_HEADER)
    return f"{_text(reason)}: {_text(detail)}" if detail else _text(reason)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _died_at(properties: pika.BasicProperties) -> datetime | None:
    dead_at = (properties.headers or {}).get(DEAD_AT_HEADER)
    if isinstance(dead_at, int):
        return datetime.fromtimestamp(dead_at / 1000, UTC)
    deaths = (properties.headers or {}).get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        moment = deaths[0].get("time")
        if isinstance(moment, datetime):
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if isinstance(moment, int | float):
            return datetime.fromtimestamp(moment, UTC)
    return None


class DeadLetterQueue:
    """A session over one work queue's dead letters."""

    def __init__(self, channel: BlockingChannel, queue: str, login: str | None = None) -> None:
        self._channel = channel
        self.login = login
        """Who re-driven messages say published them (the connection's user)."""
        self.queue = queue
        self.xq = dead_letter_queue(queue)
        self._held: list[DeadLetter] = []

    def read(
        self, *, portal: str | None = None, reason: str | None = None, limit: int = 10_000
    ) -> list[DeadLetter]:
        """Take up to `limit` dead letters (held, not removed) and return those that match."""
        while len(self._held) < limit:
            method, properties, body = self._channel.basic_get(self.xq, auto_ack=False)
            if method is None:
                break
            envelope, why = death_reason(body)
            why = _cause(properties) or why  # the worker's own word, where it left one
            self._held.append(
                DeadLetter(method.delivery_tag, body, _died_at(properties), envelope, why)
            )
        return [
            letter
            for letter in self._held
            if (portal is None or letter.portal_id == portal)
            and (reason is None or reason.lower() in letter.reason.lower())
        ]

    def redrive(self, letter: DeadLetter) -> None:
        """Publish the message back to its queue with retries reset; then drop the dead letter."""
        if letter.envelope is None or "queue_name" not in letter.envelope:
            raise ValueError(f"message {letter.message_id} cannot be re-driven: {letter.reason}")
        envelope = dict(letter.envelope)
        options = envelope.get("options")
        options = dict(options) if isinstance(options, dict) else {}
        for key in _RETRY_OPTIONS:
            options.pop(key, None)
        envelope["options"] = options
        self._channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            body=json.dumps(envelope, separators=(",", ":")).encode(),
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                user_id=self.login,  # re-driven by the operator: the worker's own identity
            ),
            mandatory=True,
        )  # returns only once RabbitMQ confirmed it (confirm mode)
        self._channel.basic_ack(letter.tag)

    def purge(self, letter: DeadLetter) -> None:
        """Delete a dead letter for good."""
        self._channel.basic_ack(letter.tag)


@contextmanager
def open_dead_letters(amqp_url: str, queue: str) -> Iterator[DeadLetterQueue]:
    """A dead-letter session; whatever is still held at the end goes back to the XQ."""
    parameters = node_parameters(amqp_url)
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield DeadLetterQueue(channel, queue, amqp_login(parameters[0]))
    finally:
        if connection.is_open:
            connection.close()  # unacknowledged messages return to the queue


def now() -> datetime:
    return datetime.now(UTC)


def format_duration(seconds: float) -> str:
    """`3d 4h`, `5h 12m`, `42s`: short and readable."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
