"""The rules an event from outside must satisfy (``engine.core.event_validation``), table-tested on decoded
values: each bad value is refused with the path of its field, and a good event passes untouched."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from engine.core.event_validation import check_envelope_fields, check_event
from engine.core.validation import Checker, ManifestInvalid
from events.ingest_wire import IngestRequest
from events.k8s import NodeCondition, Taint
from events.types import (
    DaemonSetApplied,
    DaemonSetDeleted,
    Event,
    NodeConditionChanged,
    NodeCordoned,
    NodeLabelsChanged,
    NodeRegistered,
    NodeTaintsChanged,
    PodCreated,
    PodReady,
)
from tests.ingest.samples import daemonset_applied

APPLIED = msgspec.convert(daemonset_applied()["data"], DaemonSetApplied)


def paths_of(event: Event) -> list[str]:
    with pytest.raises(ManifestInvalid) as info:
        check_event(event)
    return info.value.paths


@pytest.mark.parametrize(
    "event",
    [
        NodeRegistered(
            name="node-1.example.com",
            labels={"topology.kubernetes.io/zone": "eu-1a"},
            taints=(Taint(key="dedicated", value="gpu", effect="NoSchedule"),),
            conditions=(NodeCondition(type="Ready", status="True"),),
        ),
        NodeLabelsChanged(name="n1", labels={"gpu": ""}),
        NodeTaintsChanged(
            name="n1",
            taints=(Taint(key="k", effect="NoSchedule"), Taint(key="k", effect="NoExecute")),
        ),
        NodeConditionChanged(name="n1", condition=NodeCondition(type="Ready", status="Unknown")),
        NodeCordoned(name="n1"),
        DaemonSetDeleted(namespace="kube-system", name="agent", uid="u1"),
        PodReady(namespace="kube-system", name="agent-abcde", node="n1"),
        PodCreated(namespace="default", name="agent-abcde", node="n1", uid="u2", labels={"app": "agent"}),
        APPLIED,
    ],
    ids=lambda e: e.TAG,
)
def test_a_valid_event_passes(event: Event) -> None:
    check_event(event)


@pytest.mark.parametrize(
    ("event", "paths"),
    [
        (NodeCordoned(name="Node_7"), ["$.data.name"]),
        (NodeRegistered(name="-edge"), ["$.data.name"]),
        (NodeRegistered(name="n", labels={"bad key": "v"}), ["$.data.labels"]),
        (NodeLabelsChanged(name="n", labels={"k": "bad value"}), ["$.data.labels.k"]),
        (NodeTaintsChanged(name="n", taints=(Taint(key="k", effect="Never"),)), ["$.data.taints[0].effect"]),
        (
            NodeTaintsChanged(name="n", taints=(Taint(key="k k", effect="NoSchedule"),)),
            ["$.data.taints[0].key"],
        ),
        (
            NodeTaintsChanged(name="n", taints=(Taint(key="k", value="v v", effect="NoSchedule"),)),
            ["$.data.taints[0].value"],
        ),
        (
            NodeRegistered(
                name="n", taints=(Taint(key="k", effect="NoSchedule"), Taint(key="k", effect="NoSchedule"))
            ),
            ["$.data.taints[1]"],
        ),
        (
            NodeConditionChanged(name="n", condition=NodeCondition(type="Ready", status="yes")),
            ["$.data.condition.status"],
        ),
        (
            NodeConditionChanged(name="n", condition=NodeCondition(type="", status="True")),
            ["$.data.condition.type"],
        ),
        (
            NodeRegistered(name="n", conditions=(NodeCondition(type="Ready", status="maybe"),)),
            ["$.data.conditions[0].status"],
        ),
        (DaemonSetDeleted(namespace="kube.system", name="a", uid="u"), ["$.data.namespace"]),
        (DaemonSetDeleted(namespace="ns", name="a", uid=""), ["$.data.uid"]),
        (PodReady(namespace="ns", name="p", node="UPPER"), ["$.data.node"]),
        (PodReady(namespace="kube.system", name="p", node="n"), ["$.data.namespace"]),
        (PodCreated(namespace="ns", name="p", node="n", uid=""), ["$.data.uid"]),
        (PodCreated(namespace="ns", name="p", node="n", uid="u", labels={"k": "v v"}), ["$.data.labels.k"]),
        (msgspec.structs.replace(APPLIED, generation=0), ["$.data.generation"]),
        (msgspec.structs.replace(APPLIED, template_hash=""), ["$.data.template_hash"]),
        # every problem at once, not only the first
        (NodeLabelsChanged(name="N", labels={"k": "v v"}), ["$.data.name", "$.data.labels.k"]),
    ],
)
def test_a_broken_rule_is_refused_with_its_path(event: Event, paths: list[str]) -> None:
    assert paths_of(event) == paths


def test_a_daemonset_spec_dsctl_apply_would_refuse_is_refused_under_data() -> None:
    spec = msgspec.to_builtins(APPLIED.spec)
    spec["selector"] = {"matchLabels": {"app": "other"}}
    event = msgspec.structs.replace(APPLIED, spec=msgspec.convert(spec, type(APPLIED.spec)))
    assert paths_of(event) == ["$.data.spec.template.metadata.labels"]


def _request(fields: dict[str, str]) -> IngestRequest:
    return IngestRequest(
        type="node.cordoned",
        data=msgspec.Raw(b"{}"),
        id=fields.get("id", ""),
        source=fields.get("source", ""),
        causation_id=fields.get("causation_id", ""),
        correlation_id=fields.get("correlation_id", ""),
    )


@pytest.mark.parametrize(
    ("fields", "paths"),
    [
        ({}, []),
        ({"id": "cmdb-node-7-v1", "source": "cmdb", "causation_id": "c", "correlation_id": "r"}, []),
        ({"id": "!~" * 64}, []),
        ({"id": "has space"}, ["$.id"]),
        ({"id": "x" * 129}, ["$.id"]),
        ({"id": "é"}, ["$.id"]),
        ({"source": "a\nb"}, ["$.source"]),
        ({"source": "s" * 254}, ["$.source"]),
        ({"causation_id": "\x7f"}, ["$.causation_id"]),
        ({"correlation_id": "c" * 254, "id": " "}, ["$.id", "$.correlation_id"]),
    ],
)
def test_envelope_fields(fields: dict[str, str], paths: list[str]) -> None:
    c = Checker()
    check_envelope_fields(c, _request(fields))
    assert [e.path for e in c.errors] == paths


def test_the_envelope_time_is_not_checked_here() -> None:
    """``occurred_at`` is checked by decoding (timezone required), not by a rule."""
    c = Checker()
    check_envelope_fields(
        c,
        IngestRequest(
            type="node.cordoned", data=msgspec.Raw(b"{}"), occurred_at=datetime(2026, 1, 1, tzinfo=UTC)
        ),
    )
    assert c.errors == []
