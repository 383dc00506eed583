"""The acceptance scenarios docs/upstream-semantics.md B.1-B.27, each as one reconcile of a fresh world.

Every scenario runs with both update strategies, as the upstream tests loop over both.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.eligibility import node_should_run
from events.k8s import NodeCondition, Toleration, scheduling_spec
from events.types import NodeRegistered
from tests.core.world import (
    KEY,
    SIMPLE_LABELS,
    World,
    counts,
    created_nodes,
    deleted_pods,
    ds_doc,
    on_delete,
    rolling,
    sent_creates,
    taint,
)

STRATEGIES = [pytest.param(on_delete(), id="OnDelete"), pytest.param(rolling(1), id="RollingUpdate")]


def world_with(
    strategy: dict[str, Any], nodes: int = 0, pod_spec: dict[str, Any] | None = None, **node_labels: str
) -> World:
    w = World()
    w.nodes(nodes, dict(node_labels) or None)
    w.apply(ds_doc(strategy=strategy, pod_spec=pod_spec))
    return w


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b1_simple_daemonset_launches_one_pod_per_node_with_metadata_name_affinity(
    strategy: dict[str, Any],
) -> None:
    w = world_with(strategy, nodes=5)
    result = w.reconcile()
    assert counts(result) == (5, 0)
    assert created_nodes(result) == [f"node-{i}" for i in range(5)]
    for command in sent_creates(w, result):
        spec = scheduling_spec(command.template)
        assert spec.node_name == ""
        assert spec.affinity is not None and spec.affinity.node_affinity is not None
        required = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert required is not None and len(required.node_selector_terms) == 1
        (term,) = required.node_selector_terms
        assert term.match_expressions == ()
        assert [(f.key, f.operator, f.values) for f in term.match_fields] == [
            ("metadata.name", "In", (command.node,))
        ]
    s = result.status
    assert (s.desired_number_scheduled, s.current_number_scheduled, s.updated_number_scheduled) == (5, 5, 5)
    assert (s.number_ready, s.number_available, s.number_unavailable, s.number_misscheduled) == (0, 0, 5, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b2_no_nodes_does_nothing(strategy: dict[str, Any]) -> None:
    result = world_with(strategy).reconcile()
    assert counts(result) == (0, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b3_one_node_launches_pod(strategy: dict[str, Any]) -> None:
    w = World()
    w.node("only-node")
    w.apply(ds_doc(strategy=strategy))
    assert created_nodes(w.reconcile()) == ["only-node"]


NOT_READY = NodeCondition(type="Ready", status="False")
UNKNOWN = NodeCondition(type="Ready", status="Unknown")
NETWORK = NodeCondition(type="NetworkUnavailable", status="True")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("taints", "conditions"),
    [
        pytest.param((), (NOT_READY,), id="b4-not-ready-condition-no-taint"),
        pytest.param(
            (taint("node.kubernetes.io/not-ready", "NoExecute"),), (NOT_READY,), id="b5-not-ready-taint"
        ),
        pytest.param(
            (taint("node.kubernetes.io/unreachable", "NoExecute"),), (UNKNOWN,), id="b6-unreachable"
        ),
        pytest.param((), (NETWORK,), id="b7-network-unavailable-condition-ignored"),
        pytest.param(
            (
                taint("node.kubernetes.io/disk-pressure", "NoSchedule"),
                taint("node.kubernetes.io/memory-pressure", "NoSchedule"),
                taint("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ),
            (
                NodeCondition(type="DiskPressure", status="True"),
                NodeCondition(type="MemoryPressure", status="True"),
                NodeCondition(type="PIDPressure", status="True"),
            ),
            id="b9-pressure-taints-tolerated",
        ),
        pytest.param((taint("node.kubernetes.io/unschedulable", "NoSchedule"),), (), id="b10-cordon-taint"),
        pytest.param(
            (taint("example.com/slow", "PreferNoSchedule"),), (), id="b26-prefer-no-schedule-ignored"
        ),
    ],
)
def test_b4_to_b10_b26_node_problems_still_get_a_daemon_pod(
    strategy: dict[str, Any], taints: tuple[Any, ...], conditions: tuple[NodeCondition, ...]
) -> None:
    w = World()
    w.node("node-0", taints=taints, conditions=conditions)
    w.apply(ds_doc(strategy=strategy))
    assert counts(w.reconcile()) == (1, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("host_network", "expected"), [(False, 0), (True, 1)])
def test_b8_network_unavailable_taint_needs_host_network(
    strategy: dict[str, Any], host_network: bool, expected: int
) -> None:
    w = World()
    w.node("node-0", taints=[taint("node.kubernetes.io/network-unavailable", "NoSchedule")])
    w.apply(ds_doc(strategy=strategy, pod_spec={"hostNetwork": True} if host_network else None))
    assert counts(w.reconcile()) == (expected, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b10_cordoned_node_should_run(strategy: dict[str, Any]) -> None:
    w = World()
    w.node("node-0", unschedulable=True)
    w.apply(ds_doc(strategy=strategy))
    e = node_should_run(w.state.nodes["node-0"], w.ds().spec.template)
    assert (e.should_run, e.should_continue_running) == (True, True)
    assert counts(w.reconcile()) == (1, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b11_insufficient_capacity_is_not_checked(strategy: dict[str, Any]) -> None:
    w = World()
    w.emit(NodeRegistered(name="node-0", capacity={"memory": "75M", "cpu": "75m"}))
    w.apply(
        ds_doc(
            strategy=strategy,
            pod_spec={
                "containers": [{"name": "c", "image": "i", "resources": {"requests": {"memory": "100M"}}}]
            },
        )
    )
    e = node_should_run(w.state.nodes["node-0"], w.ds().spec.template)
    assert (e.should_run, e.should_continue_running) == (True, True)
    assert counts(w.reconcile()) == (1, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b12_host_port_conflict_with_foreign_pod_is_not_checked(strategy: dict[str, Any]) -> None:
    w = World()
    w.node("node-0")
    w.pod("node-0", "other", ds_key=None, labels={"app": "other"})
    ports = {"containers": [{"name": "c", "image": "i", "ports": [{"hostPort": 666, "containerPort": 666}]}]}
    w.apply(ds_doc(strategy=strategy, pod_spec=ports))
    assert counts(w.reconcile()) == (1, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b13_own_pod_with_same_host_port_is_left_alone(strategy: dict[str, Any]) -> None:
    w = World()
    w.node("node-0")
    ports = {"containers": [{"name": "c", "image": "i", "ports": [{"hostPort": 666, "containerPort": 666}]}]}
    w.apply(ds_doc(strategy=strategy, pod_spec=ports))
    w.pod("node-0")
    assert counts(w.reconcile()) == (0, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b14_node_selector_picks_labelled_nodes(strategy: dict[str, Any]) -> None:
    w = World()
    w.nodes(4)
    w.nodes(3, {"color": "blue", "speed": "fast"}, start=4)
    w.apply(ds_doc(strategy=strategy, pod_spec={"nodeSelector": {"color": "blue", "speed": "fast"}}))
    assert created_nodes(w.reconcile()) == ["node-4", "node-5", "node-6"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b15_node_selector_matching_no_node_does_nothing(strategy: dict[str, Any]) -> None:
    w = World()
    w.nodes(4)
    w.nodes(3, {"color": "blue", "speed": "fast"}, start=4)
    w.apply(ds_doc(strategy=strategy, pod_spec={"nodeSelector": {"color": "red", "speed": "fast"}}))
    assert counts(w.reconcile()) == (0, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("node_name", "expected"), [("node-0", ["node-0"]), ("node-10", [])])
def test_b16_template_node_name_limits_to_that_node(
    strategy: dict[str, Any], node_name: str, expected: list[str]
) -> None:
    w = World()
    w.nodes(5)
    w.apply(ds_doc(strategy=strategy, pod_spec={"nodeName": node_name}))
    assert created_nodes(w.reconcile()) == expected


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("node_name", "expected"), [("node-6", ["node-6"]), ("node-0", [])])
def test_b17_node_name_and_selector_must_both_hold(
    strategy: dict[str, Any], node_name: str, expected: list[str]
) -> None:
    w = World()
    w.nodes(4)
    w.nodes(3, {"color": "blue", "speed": "fast"}, start=4)
    spec = {"nodeName": node_name, "nodeSelector": {"color": "blue", "speed": "fast"}}
    w.apply(ds_doc(strategy=strategy, pod_spec=spec))
    assert created_nodes(w.reconcile()) == expected


def _affinity(key: str, operator: str, values: list[str]) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": key, "operator": operator, "values": values}]}
    return {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b18_required_node_affinity_picks_matching_nodes(strategy: dict[str, Any]) -> None:
    w = World()
    w.nodes(4)
    w.nodes(3, {"color": "blue"}, start=4)
    w.apply(ds_doc(strategy=strategy, pod_spec=_affinity("color", "In", ["blue"])))
    assert created_nodes(w.reconcile()) == ["node-4", "node-5", "node-6"]


@pytest.mark.parametrize(
    ("pod_spec", "expected"),
    [
        pytest.param(_affinity("type", "In", ["test"]), (False, False), id="affinity-type-in-test"),
        pytest.param(_affinity("type", "In", ["production"]), (True, True), id="affinity-type-in-production"),
        pytest.param({"nodeSelector": {"type": "test"}}, (False, False), id="node-selector-type-test"),
    ],
)
def test_b19_affinity_and_node_selector_against_labelled_node(
    pod_spec: dict[str, Any], expected: tuple[bool, bool]
) -> None:
    w = World()
    w.node("node-0", dict(SIMPLE_LABELS))
    w.apply(ds_doc(pod_spec=pod_spec))
    e = node_should_run(w.state.nodes["node-0"], w.ds().spec.template)
    assert (e.should_run, e.should_continue_running) == expected


DEDICATED = taint("dedicated", "NoSchedule", "user1")
USER_TOLERATION = {"tolerations": [{"key": "dedicated", "value": "user1", "effect": "NoSchedule"}]}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("taints", "pod_spec", "expected"),
    [
        pytest.param([DEDICATED], None, 0, id="b21-intolerant-pod-not-launched"),
        pytest.param([DEDICATED], USER_TOLERATION, 1, id="b22-tolerating-pod-launched"),
        pytest.param([], USER_TOLERATION, 1, id="b23-toleration-on-untainted-node"),
    ],
)
def test_b21_to_b23_no_schedule_taints_and_tolerations(
    strategy: dict[str, Any], taints: list[Any], pod_spec: dict[str, Any] | None, expected: int
) -> None:
    w = World()
    w.node("node-0", taints=taints)
    w.apply(ds_doc(strategy=strategy, pod_spec=pod_spec))
    assert counts(w.reconcile()) == (expected, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b24_no_schedule_taint_keeps_running_pod_and_counts_it_misscheduled(strategy: dict[str, Any]) -> None:
    w = World()
    w.node("node-0", taints=[DEDICATED])
    w.apply(ds_doc(strategy=strategy))
    w.pod("node-0")
    result = w.reconcile()
    assert counts(result) == (0, 0)
    s = result.status
    assert (s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled) == (0, 0, 1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_b25_no_execute_taint_evicts_running_pod(strategy: dict[str, Any]) -> None:
    w = World()
    w.node("node-0", taints=[taint("dedicated", "NoExecute", "user1")])
    w.apply(ds_doc(strategy=strategy))
    pod = w.pod("node-0")
    result = w.reconcile()
    assert counts(result) == (0, 1)
    assert deleted_pods(result) == [pod.name]


def test_b27_user_not_ready_toleration_loses_its_toleration_seconds() -> None:
    w = World()
    w.node("node-0")
    user = {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    w.apply(ds_doc(pod_spec={"tolerations": [user]}))
    (command,) = sent_creates(w, w.reconcile())
    tolerations = scheduling_spec(command.template).tolerations
    not_ready = [t for t in tolerations if t.key == "node.kubernetes.io/not-ready"]
    assert not_ready == [
        Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute")
    ]
    assert tolerations[0] == not_ready[0]  # replaced in place, not appended


def test_reconcile_of_unknown_key_does_nothing() -> None:
    result = World().reconcile("default/missing")
    assert result.decision is None and result.requeue_after is None


def test_key_is_namespace_slash_name() -> None:
    w = world_with(rolling(1), nodes=1)
    assert w.reconcile(KEY).decision is not None
