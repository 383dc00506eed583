"""The contract documents (``events.schema``, ``events.asyncapi``): JSON Schemas for every event, and an
AsyncAPI 3.0 document whose channels are the subjects the code really uses (checked against
``events.subjects.subject_for`` on generated events). The printed text is tested with the CLI's
``schema_text`` in ``tests/ingest/test_contract.py``."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings

from events.asyncapi import asyncapi_document, event_address
from events.schema import json_schema_document
from events.subjects import INGEST_BATCH_SUBJECT, INGEST_EVENT_SUBJECT, command_subject, subject_for
from events.types import BY_TAG, Event
from tests.events.strategies import any_event

VERSION = "1.2.3"
DOC = asyncapi_document(VERSION)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def address_pattern(address: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^.]*", re.escape(address)) + "$")


def test_json_schema_document_has_every_event_the_envelope_and_commands() -> None:
    doc = json_schema_document(VERSION)
    assert doc["version"] == VERSION
    assert set(doc["events"]) == set(BY_TAG)
    assert doc["events"]["node.condition_changed"]["x-schema-version"] == 2
    assert "Envelope" in doc["envelope"]["$defs"] and "anyOf" in doc["command"]
    assert set(doc["ingest"]) == {"request", "reply", "batch_reply", "error"}
    assert doc["engine_only"] == ["decision.recorded", "leader.elected"]
    assert json.loads(json.dumps(doc)) == doc  # plain JSON values: it equals its printout


def test_asyncapi_basic_structure() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["info"]["title"] and DOC["info"]["version"] == VERSION
    assert DOC["servers"]["local"]["protocol"] == "nats"
    assert DOC["channels"] and DOC["operations"]
    for name, op in DOC["operations"].items():
        assert op["action"] in ("send", "receive"), name
        channel = resolve(DOC, op["channel"]["$ref"])
        for message in op["messages"]:
            assert message["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), name
    for name, channel in DOC["channels"].items():
        address = channel["address"]
        placeholders = set(re.findall(r"\{(\w+)\}", address or ""))
        assert placeholders == set(channel.get("parameters", {})), name
        assert channel["messages"], name
    assert json.loads(json.dumps(DOC)) == DOC


def test_every_reference_resolves() -> None:
    for ref in refs(DOC):
        assert resolve(DOC, ref) is not None, ref
    assert "$defs" not in json.dumps(DOC)


def test_every_event_subject_is_a_channel_with_its_message() -> None:
    by_address = {c["address"]: c for c in DOC["channels"].values()}
    for tag in BY_TAG:
        address, _ = event_address(tag)
        channel = by_address[address]
        [message_ref] = channel["messages"].values()
        message = resolve(DOC, message_ref["$ref"])
        assert message["name"] == tag
        payload = resolve(DOC, message["payload"]["$ref"])
        assert payload["properties"]["type"]["const"] == tag
        assert resolve(DOC, payload["properties"]["data"]["$ref"])["x-schema-version"] == BY_TAG[tag].VERSION
    assert command_subject("{node}") in by_address
    assert {INGEST_EVENT_SUBJECT, INGEST_BATCH_SUBJECT} <= set(by_address)
    ingest = DOC["operations"]["ingest_event"]
    assert (
        ingest["action"] == "receive"
        and ingest["reply"]["channel"]["$ref"] == "#/channels/ingest_event_reply"
    )


@settings(max_examples=200, deadline=None)
@given(any_event)
def test_the_documented_address_matches_the_subject_the_code_uses(event: Event) -> None:
    address, _ = event_address(event.TAG)
    assert address_pattern(address).match(subject_for(event)), (address, subject_for(event))
