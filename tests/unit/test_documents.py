"""The contract documents are generated from the models and must never drift from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.document import EXAMPLES, asyncapi, json_schemas, write

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_documents_match_the_models(tmp_path: Path) -> None:
    written = write(tmp_path)
    for path in written:
        committed = DOCS / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python -m schemas.document docs"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run python -m schemas.document docs"
        )
    assert {p.name for p in (DOCS / "schemas").iterdir()} == {
        p.name for p in (tmp_path / "schemas").iterdir()
    }


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_json_schema_accepts_its_example_and_refuses_strangers(name: str) -> None:
    validator = Draft202012Validator(json_schemas()[name])
    validator.validate(EXAMPLES[name])
    assert not validator.is_valid({**EXAMPLES[name], "unexpected": 1})


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_references_resolve_and_examples_validate() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        _resolve(document, ref)
    registry_schema = {"$defs": document["components"]["schemas"]}
    for name, message in document["components"]["messages"].items():
        schema = {**_resolve(document, message["payload"]["$ref"]), **registry_schema}
        text_schema = json.dumps(schema).replace("#/components/schemas/", "#/$defs/")
        validator = Draft202012Validator(json.loads(text_schema))
        for example in message["examples"]:
            validator.validate(example["payload"])
        assert name.removesuffix("Backfill") in EXAMPLES
    sends = [op for op in document["operations"].values() if op["action"] == "send"]
    receives = [op for op in document["operations"].values() if op["action"] == "receive"]
    assert (len(sends), len(receives)) == (9, 11)


def test_envelopes_are_documents_of_their_own_with_unique_names() -> None:
    schemas = json_schemas()
    envelopes = {name: schema for name, schema in schemas.items() if name.endswith("Envelope")}
    assert len(envelopes) == 9  # eight payloads, and uploads on the backfill queue
    assert all(schema["title"] == name for name, schema in envelopes.items())
    document = asyncapi()
    titles = [m["title"] for m in document["components"]["messages"].values()]
    assert len(titles) == len(set(titles))


def test_every_request_names_the_events_that_answer_it() -> None:
    document = asyncapi()
    events = set(document["channels"]["results"]["messages"])
    for name, operation in document["operations"].items():
        if operation["action"] != "send":
            continue
        answers = {ref["$ref"].rsplit("/", 1)[1] for ref in operation["reply"]["messages"]}
        assert answers and answers <= events, name
