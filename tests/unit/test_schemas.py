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


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"portal_id": "acme\x1b[2J"}, "portal_id"),
        ({"asset_id": "a\r\x1b[1A"}, "asset_id"),
        ({"portal_id": "acme\u202egpj.exe"}, "portal_id"),
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
    parsed = AssetUploaded.model_validate(upload(portal_id="Acme Corp_1", asset_id="Ünïcode 写真"))
    assert (parsed.portal_id, parsed.asset_id) == ("Acme Corp_1", "Ünïcode 写真")


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
    with pytest.raises(ValidationError, match="uploaded_from is after uploaded_to"):
        FindDuplicates.model_validate(
            {
                "request_id": "r",
                "portal_id": "p",
                "scope": {
                    "uploaded_from": "2024-02-01T00:00:00Z",
                    "uploaded_to": "2024-01-01T00:00:00Z",
                },
            }
        )


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


def test_queue_arguments_match_what_dramatiq_declares() -> None:
    from worker.actors import broker

    for route in ROUTES.values():
        assert broker._build_queue_arguments(route.queue_name) == queue_arguments(route.queue_name)
        assert broker.get_actor(route.actor_name).queue_name == route.queue_name


def test_every_event_has_a_distinct_routing_key() -> None:
    keys = [event.routing_key for event in ALL_EVENTS]
    assert len(keys) == len(set(keys)) == 7
    with pytest.raises(ValidationError):
        AssetHashed(portal_id="p", asset_id="a", phash="ABCDEF0123456789", width=1, height=1)
