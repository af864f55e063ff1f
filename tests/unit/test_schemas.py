"""The wire contract: what is accepted, what is refused, and that both sides agree on queues."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    AssetUploaded,
    DeleteDuplicates,
    Envelope,
    FindDuplicates,
    build_envelope,
)
from schemas.contract import ROUTES, queue_arguments
from schemas.events import ALL_EVENTS, AssetHashed


def upload(**changes: Any) -> dict[str, Any]:
    base = {
        "portal_id": "p",
        "asset_id": "a",
        "source": "/img/a.jpg",
        "uploaded_at": "2024-01-01T00:00:00+02:00",
    }
    return {**base, **changes}


def test_an_upload_gets_its_documented_defaults() -> None:
    parsed = AssetUploaded.model_validate(upload())
    assert (parsed.title, parsed.description, parsed.tags) == ("", "", [])
    assert parsed.uploaded_at.utcoffset() is not None


@pytest.mark.parametrize(
    "changes",
    [
        {"uploaded_at": "2024-01-01T00:00:00"},
        {"portal_id": ""},
        {"portal_id": " padded "},
        {"asset_id": 5},
        {"tags": "a,b"},
        {"source": "a.jpg"},
        {"source": "s3://bucket/a.jpg"},
        {"unknown": 1},
    ],
)
def test_bad_uploads_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AssetUploaded.model_validate(upload(**changes))


@pytest.mark.parametrize("portal_id", ["acme.eu", "acme#", "ac*me", "a" * 65, "acme corp", "é"])
def test_portal_ids_that_would_break_routing_keys_are_refused(portal_id: str) -> None:
    with pytest.raises(ValidationError, match="portal_id"):
        AssetUploaded.model_validate(upload(portal_id=portal_id))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"asset_id": "acme\x1b[2J"}, "asset_id"),
        ({"asset_id": "a\r\x1b[1A"}, "asset_id"),
        ({"asset_id": "acme\u202egpj.exe"}, "asset_id"),
        ({"asset_id": "a\x85b"}, "asset_id"),
        ({"tags": ["ok", "t\x00ag"]}, "tags.1"),
    ],
)
def test_ids_and_tags_refuse_control_characters_with_a_clear_reason(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        AssetUploaded.model_validate(upload(**changes))
    (error,) = refused.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert "must not contain control characters" in error["msg"]


def test_ids_keep_inner_blanks_and_any_script() -> None:
    parsed = AssetUploaded.model_validate(upload(portal_id="Acme_1-eu", asset_id="Ünïcode 写真"))
    assert (parsed.portal_id, parsed.asset_id) == ("Acme_1-eu", "Ünïcode 写真")


def test_find_duplicates_defaults_and_bounds() -> None:
    request = FindDuplicates.model_validate({"request_id": "r", "portal_id": "p"})
    assert (request.sort.field, request.sort.order, request.max_distance) == (
        "uploaded_at",
        "desc",
        None,
    )
    for bad in (-1, 33, True, "4"):
        with pytest.raises(ValidationError):
            FindDuplicates.model_validate(
                {"request_id": "r", "portal_id": "p", "max_distance": bad}
            )
    # A range that ends before it starts is a scope that holds nothing, as JSON Schema (which
    # cannot compare two fields) says too: accepted, and answered with no sets.
    reversed_range = FindDuplicates.model_validate(
        {
            "request_id": "r",
            "portal_id": "p",
            "scope": {
                "uploaded_from": "2024-02-01T00:00:00Z",
                "uploaded_to": "2024-01-01T00:00:00Z",
            },
        }
    )
    assert reversed_range.scope.uploaded_from is not None
    for loose in (1795599000, "2024-01-01T00:00Z", "2024-01-01 00:00:00+00:00", "2024-01-01"):
        with pytest.raises(ValidationError, match="RFC 3339"):
            AssetUploaded.model_validate(upload(uploaded_at=loose))


def test_delete_needs_at_least_one_asset() -> None:
    with pytest.raises(ValidationError):
        DeleteDuplicates.model_validate(
            {"command_id": "c", "portal_id": "p", "original_id": "o", "asset_ids": []}
        )


def test_built_envelopes_pass_the_strict_check() -> None:
    envelope = build_envelope(AssetUploaded.model_validate(upload()), message_id="m1")
    assert Envelope.model_validate(envelope).message_id == "m1"
    assert (envelope["queue_name"], envelope["actor_name"]) == (
        "dupfinder.assets",
        "asset_uploaded",
    )
    assert envelope["args"][0]["uploaded_at"] == "2024-01-01T00:00:00+02:00"


@pytest.mark.parametrize(
    "changes",
    [
        {"options": None},
        {"options": {"max_retries": 1}},
        {"options": {"retries": None}},
        {"options": {"retries": "1"}},
        {"message_id": ""},
        {"args": []},
        {"kwargs": {"a": 1}},
        {"message_timestamp": "now"},
        {"extra": 1},
    ],
)
def test_the_envelope_check_refuses_what_would_harm_a_worker(changes: dict[str, Any]) -> None:
    envelope = {**build_envelope(AssetUploaded.model_validate(upload())), **changes}
    with pytest.raises(ValidationError):
        Envelope.model_validate(envelope)


def test_retry_bookkeeping_written_by_dramatiq_is_accepted() -> None:
    envelope = build_envelope(AssetUploaded.model_validate(upload()))
    envelope["options"] = {"retries": 2, "traceback": "...", "requeue_timestamp": 1, "eta": 2}
    assert Envelope.model_validate(envelope).options.retries == 2


def test_queue_declarations_match_what_dramatiq_declares() -> None:
    from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL

    from schemas.contract import queue_declarations

    for route in ROUTES.values():
        declared = queue_declarations(route.queue_name)
        assert declared[f"{route.queue_name}.XQ"] == {"x-message-ttl": DEAD_MESSAGE_TTL}
        assert declared[f"{route.queue_name}.DQ"] == queue_arguments(route.queue_name)


def test_queue_arguments_match_what_dramatiq_declares() -> None:
    from worker.actors import broker

    for route in ROUTES.values():
        assert broker._build_queue_arguments(route.queue_name) == queue_arguments(route.queue_name)
        assert broker.get_actor(route.actor_name).queue_name == route.queue_name


def test_quorum_declarations_replicate_every_queue_and_delay_in_wait_queues() -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    from schemas.contract import (
        DEAD_LETTER_DELIVERY_LIMIT,
        WAIT_TIERS_MS,
        queue_declarations,
        wait_queue,
        wait_tier,
    )

    for route in ROUTES.values():
        queue = route.queue_name
        declared = queue_declarations(queue, "quorum", delivery_limit=7)
        assert all(args["x-queue-type"] == "quorum" for args in declared.values())
        # Dramatiq's own classic arguments, plus the quorum ones; never a priority.
        classic = RabbitmqBroker(url="amqp://127.0.0.1:1/")._build_queue_arguments(queue)
        assert declared[queue] == {
            **classic,
            "x-queue-type": "quorum",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": 7,
        }
        assert declared[f"{queue}.DQ"] == declared[queue]
        assert declared[f"{queue}.XQ"]["x-delivery-limit"] == DEAD_LETTER_DELIVERY_LIMIT
        for tier in WAIT_TIERS_MS:
            wait = declared[wait_queue(queue, tier)]
            assert wait["x-message-ttl"] == tier
            assert wait["x-dead-letter-routing-key"] == queue
            assert wait["x-dead-letter-strategy"] == "at-least-once"
    assert wait_queue("q", 250) == "q.DQ.250ms" and wait_queue("q", 4000) == "q.DQ.4s"
    # A delay waits the longest tier not above it: never longer than asked, at least 250 ms.
    assert [wait_tier(ms) for ms in (0, 249, 250, 999, 1000, 5000, 300_000)] == [
        250,
        250,
        250,
        250,
        1000,
        4000,
        256_000,
    ]


def test_the_broker_declares_what_the_contract_says_for_either_queue_type() -> None:
    from worker.broker import DupfinderBroker

    for queue_type in ("classic", "quorum"):
        broker = DupfinderBroker(url="amqp://127.0.0.1:1/", queue_type=queue_type, delivery_limit=5)
        for route in ROUTES.values():
            assert broker._build_queue_arguments(route.queue_name) == queue_arguments(
                route.queue_name, queue_type, 5
            )


def test_every_event_has_a_distinct_type_and_routes_under_its_portal() -> None:
    keys = [event.event_type for event in ALL_EVENTS]
    assert len(keys) == len(set(keys)) == 11
    event = AssetHashed(portal_id="acme", asset_id="a", phash="8" * 16, width=1, height=1)
    assert event.routing_key == "acme.asset.hashed"
    with pytest.raises(ValidationError):
        AssetHashed(portal_id="p", asset_id="a", phash="ABCDEF0123456789", width=1, height=1)


def test_a_radius_without_a_rule_means_phash_and_verified_takes_none() -> None:
    from schemas.messages import DeleteDuplicates, chosen_rule

    defaults = {"default_match": "verified", "default_max_distance": 4}
    assert chosen_rule(None, 0, **defaults) == ("phash", 0)  # type: ignore[arg-type]
    assert chosen_rule(None, None, **defaults) == ("verified", 4)  # type: ignore[arg-type]
    assert chosen_rule("phash", None, **defaults) == ("phash", 4)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_distance belongs to the phash rule"):
        FindDuplicates(request_id="r", portal_id="p", match="verified", max_distance=0)
    with pytest.raises(ValidationError, match="max_distance belongs to the phash rule"):
        DeleteDuplicates(
            command_id="c",
            portal_id="p",
            original_id="o",
            asset_ids=["a"],
            match="verified",
            max_distance=2,
        )


def test_every_failure_the_worker_can_report_is_a_listed_reason() -> None:
    import typing

    from schemas.events import CommandFailure, FailureReason, RequestFailure
    from worker.core import errors

    def leaves(cls: type[errors.DupfinderError]) -> list[type[errors.DupfinderError]]:
        subclasses = cls.__subclasses__()
        return [leaf for sub in subclasses for leaf in leaves(sub)] if subclasses else [cls]

    upload_reasons = set(typing.get_args(FailureReason))
    for error in leaves(errors.DupfinderError):
        if error.reason != "forbidden":  # a forbidden message gets no event at all
            assert error.reason in upload_reasons, error
    assert {"asset_deleted", "internal_error"} <= upload_reasons
    for reasons in (RequestFailure, CommandFailure):
        assert {"invalid_message", "store_unavailable", "publish_failed", "internal_error"} <= set(
            typing.get_args(reasons)
        )
