"""The codec's laws and its error messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings

from events import codec
from events.envelope import Envelope, wrap
from events.errors import MalformedEvent
from events.k8s import NodeCondition, PodTemplate, Taint
from events.types import (
    EVENT_TYPES,
    CreatePod,
    DeletePod,
    EvictPod,
    NodeConditionChanged,
    NodeRegistered,
)
from tests.events.strategies import envelopes

AT = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(envelopes)
def test_every_event_type_round_trips_through_the_wire_format(env: Envelope) -> None:
    assert codec.decode(codec.encode(env)) == env


def test_the_round_trip_strategy_covers_every_tag() -> None:
    tags = {cls.TAG for cls in EVENT_TYPES}
    assert len(tags) == len(EVENT_TYPES), "two event types share a tag"
    assert all(t.count(".") == 1 and t == t.lower() for t in tags)


@pytest.mark.parametrize(
    "command",
    [
        CreatePod(
            id="c1",
            node="n1",
            namespace="default",
            pod_name="ds-abcde",
            pod_uid="u",
            owner_uid="o",
            owner_name="ds",
            revision_hash="h",
            template=PodTemplate(spec={"a": [1]}),
        ),
        DeletePod(id="c2", node="n1", namespace="default", pod_name="ds-abcde", reason="x"),
        EvictPod(id="c3", node="n1", namespace="default", pod_name="ds-abcde"),
    ],
)
def test_commands_round_trip_with_their_kind_tag(command: CreatePod | DeletePod | EvictPod) -> None:
    wire = codec.encode_command(command)
    assert json.loads(wire)["kind"] in {"create_pod", "delete_pod", "evict_pod"}
    assert codec.decode_command(wire) == command


def _wire(data: dict[str, object], type_: str = "node.registered", version: int = 1) -> bytes:
    return json.dumps(
        {
            "id": "e1",
            "type": type_,
            "schema_version": version,
            "occurred_at": "2026-11-22T09:00:00Z",
            "source": "test",
            "data": data,
        }
    ).encode()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "n1", "labels": {"a": 1}}, "$.data.labels[...]"),
        ({"labels": {}}, "$.data.name"),
        ({"name": "n1", "taints": [{"key": "k"}]}, "$.data.taints[0].effect"),
        ({"name": "n1", "unschedulable": "yes"}, "$.data.unschedulable"),
    ],
)
def test_a_malformed_payload_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        codec.decode(_wire(data))
    assert info.value.field == field
    assert field in str(info.value)


def test_a_missing_field_is_named_in_the_message() -> None:
    with pytest.raises(MalformedEvent, match="missing required field `name`"):
        codec.decode(_wire({"labels": {}}))


def test_an_unknown_event_type_is_refused_naming_the_type_field() -> None:
    with pytest.raises(MalformedEvent) as info:
        codec.decode(_wire({"name": "n1"}, type_="node.exploded"))
    assert info.value.field == "$.type"


def test_a_future_schema_version_is_refused() -> None:
    with pytest.raises(MalformedEvent) as info:
        codec.decode(_wire({"name": "n1"}, version=9))
    assert info.value.field == "$.schema_version"


def test_an_envelope_that_is_not_json_is_refused() -> None:
    with pytest.raises(MalformedEvent):
        codec.decode(b"{not json")


def test_an_envelope_missing_its_time_names_that_field() -> None:
    body = json.loads(_wire({"name": "n1"}))
    del body["occurred_at"]
    with pytest.raises(MalformedEvent, match="occurred_at"):
        codec.decode(json.dumps(body).encode())


def test_an_old_payload_decodes_through_the_upcasting_hook() -> None:
    old = _wire(
        {"name": "n1", "type": "Ready", "status": "False", "reason": "KubeletDown"},
        type_="node.condition_changed",
        version=1,
    )
    env = codec.decode(old)
    assert env.data == NodeConditionChanged(
        name="n1", condition=NodeCondition(type="Ready", status="False", reason="KubeletDown")
    )
    # re-encoding writes the current version, which then decodes without the hook
    assert json.loads(codec.encode(env))["schema_version"] == NodeConditionChanged.VERSION
    reencoded = wrap(env.data, id="e2", occurred_at=AT, source="t")
    assert codec.decode(codec.encode(reencoded)).data == env.data


def test_an_old_payload_that_is_malformed_after_upcasting_names_the_field() -> None:
    old = _wire({"name": "n1", "status": "False"}, type_="node.condition_changed", version=1)
    with pytest.raises(MalformedEvent, match=r"\$\.data\.condition"):
        codec.decode(old)


def test_wrap_defaults_the_correlation_id_to_the_event_id() -> None:
    env = wrap(
        NodeRegistered(name="n1", taints=(Taint(key="k", effect="NoSchedule"),)),
        id="e9",
        occurred_at=AT,
        source="cli",
    )
    assert env.correlation_id == "e9"
    assert env.type == "node.registered"
    assert msgspec.json.decode(codec.encode(env))["data"]["taints"] == [{"key": "k", "effect": "NoSchedule"}]
