"""What the ingest service accepts and refuses, checked on the pure admission (``engine.core.admission``,
no server): every refusal names its field and its reason code, and no input makes it raise anything but
``InvalidInput``."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import admission
from engine.core.refusals import Refused, refusal
from events.envelope import Envelope
from events.errors import InvalidInput
from events.ingest_wire import (
    DEFAULT_SOURCE,
    ENGINE_ONLY_CODE,
    EXECUTOR_ONLY_CODE,
    INVALID,
    MALFORMED,
    MAX_BATCH,
    TOO_LARGE,
)
from events.k8s import NodeCondition
from events.types import BY_TAG, NodeConditionChanged, NodeRegistered
from tests.events.strategies import json_values
from tests.ingest.samples import body, daemonset_applied, node_registered, pod_ready

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def new_id() -> str:
    return "generated-id"


def envelope_from(
    data: bytes | msgspec.Raw, *, now: datetime, new_id: Callable[[], str] = new_id
) -> Envelope:
    return admission.envelope_from(data, now=now, new_id=new_id)


def envelopes_from_batch(data: bytes, *, now: datetime) -> list[Envelope]:
    numbers = itertools.count(1)  # each event of a batch gets an id of its own, as uuid4 would
    return admission.envelopes_from_batch(data, now=now, new_id=lambda: f"generated-{next(numbers)}")


def refusal_of(data: bytes) -> Refused:
    with pytest.raises(InvalidInput) as info:
        envelope_from(data, now=NOW)
    return refusal(info.value)


def test_a_bare_event_is_completed_with_id_time_source_and_version() -> None:
    env = envelope_from(body(node_registered()), now=NOW, new_id=lambda: "fixed-id")
    assert env.data == NodeRegistered(name="node-1", labels={"zone": "a"})
    assert (env.id, env.occurred_at, env.source, env.schema_version) == ("fixed-id", NOW, DEFAULT_SOURCE, 1)
    assert env.correlation_id == "fixed-id" and env.causation_id == ""


def test_envelope_fields_given_by_the_caller_are_kept() -> None:
    request = {
        **node_registered(),
        "id": "ext-42",
        "occurred_at": "2025-12-24T18:00:00+01:00",
        "source": "cmdb-sync",
        "causation_id": "c-1",
        "correlation_id": "r-1",
        "schema_version": 1,
    }
    env = envelope_from(body(request), now=NOW)
    assert (env.id, env.source, env.causation_id, env.correlation_id) == ("ext-42", "cmdb-sync", "c-1", "r-1")
    assert env.occurred_at == datetime(2025, 12, 24, 17, 0, tzinfo=UTC)


def test_an_old_schema_version_is_upcast() -> None:
    request = {
        "type": "node.condition_changed",
        "schema_version": 1,
        "data": {"name": "node-1", "type": "Ready", "status": "False", "reason": "KubeletDown"},
    }
    env = envelope_from(body(request), now=NOW)
    assert env.schema_version == 2
    assert env.data == NodeConditionChanged(
        name="node-1", condition=NodeCondition(type="Ready", status="False", reason="KubeletDown")
    )


@pytest.mark.parametrize(
    ("request_body", "field", "code"),
    [
        (b"", "$", MALFORMED),
        (b"not json", "$", MALFORMED),
        (b"[1, 2]", "$", MALFORMED),
        (body({"data": {"name": "n"}}), "$.type", MALFORMED),  # no type
        (body({"type": "node.registered"}), "$.data", MALFORMED),  # no data
        (body({**node_registered(), "colour": "red"}), "$.colour", MALFORMED),  # unknown envelope field
        (body({**node_registered(), "a b": 1}), '$["a b"]', MALFORMED),
        (body({"type": "node.exploded", "data": {}}), "$.type", MALFORMED),
        (body({"type": 7, "data": {}}), "$.type", MALFORMED),
        (
            body({"type": "node.registered", "data": {"name": "n", "labels": "zone=a"}}),
            "$.data.labels",
            MALFORMED,
        ),
        (body({"type": "node.registered", "data": {"name": "n", "lables": {}}}), "$.data.lables", MALFORMED),
        (body({"type": "node.registered", "data": {}}), "$.data.name", MALFORMED),  # no name
        (
            body({"type": "node.registered", "data": {"name": "n", "taints": [{"key": "k"}]}}),
            "$.data.taints[0].effect",
            MALFORMED,
        ),
        (body({**node_registered(), "schema_version": 9}), "$.schema_version", MALFORMED),
        (body({**node_registered(), "occurred_at": "2026-01-01T00:00:00"}), "$.occurred_at", MALFORMED),
        (body({**node_registered(), "occurred_at": "yesterday"}), "$.occurred_at", MALFORMED),
        (body(node_registered("Node_1")), "$.data.name", INVALID),
        (body(node_registered("-edge")), "$.data.name", INVALID),
        (
            body({"type": "node.labels_changed", "data": {"name": "n", "labels": {"bad key": "v"}}}),
            "$.data.labels",
            INVALID,
        ),
        (
            body({"type": "node.labels_changed", "data": {"name": "n", "labels": {"k": "bad value"}}}),
            "$.data.labels.k",
            INVALID,
        ),
        (
            body(
                {
                    "type": "node.taints_changed",
                    "data": {"name": "n", "taints": [{"key": "k", "effect": "Never"}]},
                }
            ),
            "$.data.taints[0].effect",
            INVALID,
        ),
        (
            body(
                {
                    "type": "node.condition_changed",
                    "data": {"name": "n", "condition": {"type": "Ready", "status": "yes"}},
                }
            ),
            "$.data.condition.status",
            INVALID,
        ),
        (
            body(
                {"type": "daemonset.deleted", "data": {"namespace": "kube.system", "name": "a", "uid": "u"}}
            ),
            "$.data.namespace",
            INVALID,
        ),
        (body(pod_ready()), "$.type", EXECUTOR_ONLY_CODE),
        (
            body({**pod_ready(), "data": {**pod_ready()["data"], "node": "UPPER"}}),
            "$.type",
            EXECUTOR_ONLY_CODE,
        ),
        (body({**node_registered(), "id": "has space"}), "$.id", INVALID),
        (body({**node_registered(), "id": "x" * 129}), "$.id", INVALID),
        (body({**node_registered(), "source": "a\nb"}), "$.source", INVALID),
        (body({"type": "decision.recorded", "data": {}}), "$.type", ENGINE_ONLY_CODE),
        (body({"type": "leader.elected", "data": {"holder": "me", "epoch": 99}}), "$.type", ENGINE_ONLY_CODE),
    ],
)
def test_refusals_name_the_field_and_the_reason(request_body: bytes, field: str, code: str) -> None:
    refused = refusal_of(request_body)
    assert (refused.field, refused.reason_code) == (field, code), str(refused)
    assert str(refused).startswith(field) or field in str(refused)


def test_engine_only_types_are_refused_with_a_clear_reason() -> None:
    refused = refusal_of(body({"type": "decision.recorded", "data": {}}))
    assert "written by the engine only" in str(refused)


def test_a_daemonset_applied_as_dsctl_apply_builds_it_is_accepted() -> None:
    env = envelope_from(body(daemonset_applied()), now=NOW)
    assert env.type == "daemonset.applied"


def test_a_daemonset_spec_dsctl_apply_would_refuse_is_refused_with_its_path() -> None:
    request = daemonset_applied()
    request["data"]["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    refused = refusal_of(body(request))
    assert refused.field == "$.data.spec.template.metadata.labels" and refused.reason_code == INVALID


def test_every_problem_is_listed_not_only_the_first() -> None:
    refused = refusal_of(body({"type": "node.labels_changed", "data": {"name": "N", "labels": {"k": "v v"}}}))
    assert {"$.data.name", "$.data.labels.k"} <= {e.field for e in refused.errors}


def test_a_batch_is_all_or_nothing_and_says_which_lines() -> None:
    lines = [
        body(node_registered("a")),
        body(node_registered("B_AD")),
        b"",
        body(node_registered("c")),
        b"{oops",
    ]
    with pytest.raises(Refused) as info:
        envelopes_from_batch(b"\n".join(lines), now=NOW)
    refused = info.value
    assert refused.field == "$[1].data.name"
    assert [(e.index, e.line) for e in refused.errors] == [(1, 2), (3, 5)]
    assert "2 of 4 events refused, none appended" in str(refused)
    assert "item 1 (line 2)" in str(refused)


def test_a_batch_as_a_json_array() -> None:
    cordoned = {"type": "node.cordoned", "data": {"name": "a"}}
    envs = envelopes_from_batch(body([node_registered("a"), cordoned]), now=NOW)
    assert [e.type for e in envs] == ["node.registered", "node.cordoned"]
    with pytest.raises(Refused) as info:
        envelopes_from_batch(body([node_registered("a"), {"type": "leader.elected", "data": {}}]), now=NOW)
    assert info.value.field == "$[1].type" and info.value.reason_code == ENGINE_ONLY_CODE
    assert info.value.errors[0].line is None


def test_an_oversized_or_empty_batch_is_refused() -> None:
    line = body(node_registered())
    with pytest.raises(Refused) as info:
        envelopes_from_batch(b"\n".join([line] * (MAX_BATCH + 1)), now=NOW)
    assert info.value.reason_code == TOO_LARGE
    for empty in (b"  \n ", b"[]", b" [ ] "):
        with pytest.raises(InvalidInput, match="empty batch"):
            envelopes_from_batch(empty, now=NOW)


# --- fuzz: nothing but InvalidInput, whatever arrives ---------------------------------------------------

_tags = st.sampled_from(sorted(BY_TAG)) | st.text(max_size=12)
_requests = st.fixed_dictionaries(
    {"type": _tags, "data": json_values},
    optional={
        "schema_version": st.integers(-2, 4) | json_values,
        "id": json_values,
        "occurred_at": json_values,
    },
)
_fields_of_tag = st.sampled_from(sorted(BY_TAG)).flatmap(
    lambda tag: st.fixed_dictionaries(
        {
            "type": st.just(tag),
            "data": st.fixed_dictionaries(
                {},
                optional={f.encode_name: json_values for f in msgspec.structs.fields(BY_TAG[tag])},
            ),
        }
    )
)


def _accepts_or_refuses(data: bytes) -> None:
    try:
        envelope_from(data, now=NOW)
    except InvalidInput as err:
        refused = refusal(err)
        assert refused.field.startswith("$"), refused
        assert refused.reason_code in {MALFORMED, INVALID, ENGINE_ONLY_CODE, EXECUTOR_ONLY_CODE, TOO_LARGE}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_never_raised(data: bytes) -> None:
    _accepts_or_refuses(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests | _fields_of_tag)
def test_random_json_requests_are_accepted_or_refused(request_obj: dict[str, Any]) -> None:
    _accepts_or_refuses(json.dumps(request_obj).encode())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=60) | (_requests.map(lambda r: json.dumps(r).encode())), max_size=5))
def test_random_batches_are_refused_never_raised(items: list[bytes]) -> None:
    with contextlib.suppress(InvalidInput):
        envelopes_from_batch(b"\n".join(items), now=NOW)
