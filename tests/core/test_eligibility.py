"""``(shouldRun, shouldContinueRunning)`` and its explanation: the truth table of
docs/upstream-semantics.md A.2."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.eligibility import (
    ELIGIBLE,
    NODE_AFFINITY_MISMATCH,
    NODE_NAME_MISMATCH,
    NODE_SELECTOR_MISMATCH,
    TAINT_NO_EXECUTE,
    TAINT_NO_SCHEDULE,
    node_should_run,
)
from events.k8s import PodTemplate, Taint, TemplateMetadata
from projections.model import NodeState


def template(**spec: Any) -> PodTemplate:
    return PodTemplate(
        metadata=TemplateMetadata(labels={"app": "x"}),
        spec={"containers": [{"name": "c", "image": "i"}], **spec},
    )


def node(
    name: str = "node-0", labels: dict[str, str] | None = None, taints: list[Taint] | None = None, **kw: Any
) -> NodeState:
    return NodeState(name=name, labels=labels or {}, taints=taints or [], **kw)


GPU = {"nodeSelector": {"gpu": "true"}}


@pytest.mark.parametrize(
    ("n", "spec", "expected", "code"),
    [
        pytest.param(node(), {}, (True, True), ELIGIBLE, id="plain-node"),
        pytest.param(node(), GPU, (False, False), NODE_SELECTOR_MISMATCH, id="selector-mismatch"),
        pytest.param(node(labels={"gpu": "true"}), GPU, (True, True), ELIGIBLE, id="selector-match"),
        pytest.param(
            node(), {"nodeName": "other"}, (False, False), NODE_NAME_MISMATCH, id="node-name-mismatch"
        ),
        pytest.param(
            node(),
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]
                        }
                    }
                }
            },
            (False, False),
            NODE_AFFINITY_MISMATCH,
            id="affinity-mismatch",
        ),
        pytest.param(
            node(taints=[Taint(key="d", value="u", effect="NoSchedule")]),
            {},
            (False, True),
            TAINT_NO_SCHEDULE,
            id="untolerated-no-schedule",
        ),
        pytest.param(
            node(taints=[Taint(key="d", value="u", effect="NoExecute")]),
            {},
            (False, False),
            TAINT_NO_EXECUTE,
            id="untolerated-no-execute",
        ),
        pytest.param(
            node(taints=[Taint(key="d", effect="NoSchedule"), Taint(key="e", effect="NoExecute")]),
            {},
            (False, False),
            TAINT_NO_EXECUTE,
            id="no-schedule-and-no-execute",
        ),
        pytest.param(
            node(taints=[Taint(key="d", effect="PreferNoSchedule")]),
            {},
            (True, True),
            ELIGIBLE,
            id="prefer-no-schedule-only",
        ),
        pytest.param(node(unschedulable=True), {}, (True, True), ELIGIBLE, id="cordoned-no-taint"),
        pytest.param(
            node(
                unschedulable=True,
                taints=[Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")],
            ),
            {},
            (True, True),
            ELIGIBLE,
            id="cordoned-with-taint",
        ),
        pytest.param(
            node(taints=[Taint(key="node.kubernetes.io/not-ready", effect="NoExecute")]),
            {},
            (True, True),
            ELIGIBLE,
            id="not-ready",
        ),
        pytest.param(
            node(taints=[Taint(key="node.kubernetes.io/unreachable", effect="NoExecute")]),
            {},
            (True, True),
            ELIGIBLE,
            id="unreachable",
        ),
        pytest.param(
            node(taints=[Taint(key="node.kubernetes.io/memory-pressure", effect="NoSchedule")]),
            {},
            (True, True),
            ELIGIBLE,
            id="memory-pressure",
        ),
        pytest.param(
            node(taints=[Taint(key="node.kubernetes.io/network-unavailable", effect="NoSchedule")]),
            {},
            (False, True),
            TAINT_NO_SCHEDULE,
            id="network-unavailable",
        ),
        pytest.param(
            node(taints=[Taint(key="node.kubernetes.io/network-unavailable", effect="NoSchedule")]),
            {"hostNetwork": True},
            (True, True),
            ELIGIBLE,
            id="network-unavailable-host-network",
        ),
        pytest.param(
            node(taints=[Taint(key="d", value="u", effect="NoExecute")]),
            {
                "tolerations": [
                    {"key": "d", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}
                ]
            },
            (True, True),
            ELIGIBLE,
            id="time-limited-toleration-counts",
        ),
        pytest.param(
            node(taints=[Taint(key="d", effect="NoSchedule")]),
            {"nodeSelector": {"x": "y"}},
            (False, False),
            NODE_SELECTOR_MISMATCH,
            id="selector-beats-taint",
        ),
    ],
)
def test_truth_table(n: NodeState, spec: dict[str, Any], expected: tuple[bool, bool], code: str) -> None:
    e = node_should_run(n, template(**spec))
    assert (e.should_run, e.should_continue_running) == expected
    assert e.code == code


@pytest.mark.parametrize(
    ("n", "spec", "message"),
    [
        pytest.param(
            node(taints=[Taint(key="dedicated", value="user1", effect="NoSchedule")]),
            {},
            "taint dedicated=user1:NoSchedule not tolerated",
            id="taint",
        ),
        pytest.param(node(), GPU, "node does not match nodeSelector gpu=true", id="selector"),
        pytest.param(
            node(), {"nodeName": "node-9"}, "template nodeName is node-9, not node-0", id="node-name"
        ),
    ],
)
def test_explanation_names_the_first_failed_rule(n: NodeState, spec: dict[str, Any], message: str) -> None:
    assert node_should_run(n, template(**spec)).message == message


def test_explanation_lists_every_rule_checked() -> None:
    e = node_should_run(node(taints=[Taint(key="d", effect="NoSchedule")]), template(**GPU))
    assert [(c.rule, c.passed) for c in e.checks] == [
        ("nodeName", True),
        ("nodeSelector", False),
        ("nodeAffinity", True),
        ("taints", False),
    ]


def test_undecodable_template_matches_no_node() -> None:
    e = node_should_run(node(), template(nodeSelector=["not", "a", "map"]))
    assert (e.should_run, e.should_continue_running, e.code) == (False, False, "InvalidTemplate")


def test_explain_node_gives_rules_pods_and_reasons_even_without_a_decision() -> None:
    from engine.core.explain import explain_node
    from tests.core.world import World, ds_doc, taint

    w = World()
    w.node("node-0", taints=[taint("dedicated", "NoSchedule", "user1")])
    w.apply(ds_doc())
    pod = w.pod("node-0")
    w.record(w.reconcile())
    assert w.reconcile().decision is None
    why = explain_node(w.state, "default/foo", "node-0", w.now)
    assert (why.eligibility.should_run, why.eligibility.should_continue_running) == (False, True)
    assert why.eligibility.message == "taint dedicated=user1:NoSchedule not tolerated"
    assert [p.name for p in why.pods] == [pod.name]
    (reason,) = why.reasons
    assert (reason.action, reason.code) == ("keep", "KeptDespiteNoSchedule")
    assert "misscheduled" in reason.message
