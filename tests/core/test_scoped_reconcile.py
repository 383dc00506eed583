"""The node-scoped reconcile: what it decides for the changed nodes is what a full reconcile would
decide for them, and it steps aside (None) whenever the rest of the fleet could matter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.dispatch import commands_to_send
from engine.core.reconcile import MAX_SCOPE, reconcile, reconcile_nodes
from events.k8s import LabelSelector, Taint
from events.types import CreatePod, DeletePod, NodeLabelsChanged, NodeTaintsChanged
from tests.core.world import KEY, World, ds_doc, rolling


def _settled(nodes: int = 3, **doc: object) -> World:
    """A DaemonSet at rest: one ready pod per node, no command in flight."""
    w = World()
    w.nodes(nodes)
    w.apply(ds_doc(**doc))  # type: ignore[arg-type]
    w.execute(w.reconcile())
    w.record(w.reconcile())
    assert w.reconcile().decision is None
    return w


def _key(c: CreatePod | DeletePod | object) -> tuple[str, str, str]:
    assert isinstance(c, CreatePod | DeletePod)
    return (type(c).__name__, c.node, c.pod_name)


def test_a_new_node_gets_exactly_the_create_a_full_reconcile_would_make() -> None:
    w = _settled()
    w.node("node-9")
    scoped = reconcile_nodes(w.state, KEY, ["node-9"], w.now)
    full = reconcile(w.state, KEY, w.now)
    assert scoped is not None and scoped.decision is not None and full.decision is not None
    assert scoped.decision.scope == ("node-9",)
    assert commands_to_send(w.state, scoped.decision) == commands_to_send(
        w.state, full.decision
    )  # same names, ids, templates
    assert scoped.decision.status == w.ds().status  # status is left to the full reconcile
    assert [r.node for r in scoped.decision.reasons] == ["node-9"]


def test_a_node_losing_its_label_loses_its_pod() -> None:
    w = _settled(nodes=3, pod_spec={"nodeSelector": {"disk": "ssd"}})
    for n in ("node-0", "node-1"):
        w.emit(NodeLabelsChanged(name=n, labels={"disk": "ssd"}))
    w.execute(w.reconcile())
    w.record(w.reconcile())
    w.emit(NodeLabelsChanged(name="node-1", labels={}))
    scoped = reconcile_nodes(w.state, KEY, ["node-1"], w.now)
    full = reconcile(w.state, KEY, w.now)
    assert scoped is not None and scoped.decision is not None and full.decision is not None
    assert [_key(c) for c in scoped.decision.commands] == [_key(c) for c in full.decision.commands]
    assert isinstance(scoped.decision.commands[0], DeletePod)


def test_an_unchanged_node_yields_no_decision() -> None:
    w = _settled()
    result = reconcile_nodes(w.state, KEY, ["node-1"], w.now)
    assert result is not None and result.decision is None


@pytest.mark.parametrize(
    "why",
    ["in flight", "unknown node", "too many nodes", "orphan to adopt", "no such daemonset", "deleting"],
)
def test_it_steps_aside_when_the_rest_of_the_fleet_could_matter(why: str) -> None:
    w = _settled()
    nodes, key = ["node-1"], KEY
    if why == "in flight":
        w.node("node-9")
        w.record(w.reconcile())  # a create now in flight, unanswered
        w.node("node-10")
        nodes = ["node-10"]
    elif why == "unknown node":
        nodes = ["ghost"]
    elif why == "too many nodes":
        nodes = [f"node-{i}" for i in range(MAX_SCOPE + 1)]
    elif why == "orphan to adopt":
        w.pod("node-1", ds_key=None)
    elif why == "no such daemonset":
        key = "default/nope"
    elif why == "deleting":
        w.delete(policy="Foreground")
    assert reconcile_nodes(w.state, key, nodes, w.now) is None


@settings(max_examples=60, deadline=None)
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(["node-0", "node-1", "node-2", "node-3"]),
            st.sampled_from(["label", "unlabel", "noschedule", "noexecute", "untaint"]),
        ),
        min_size=1,
        max_size=4,
    ),
    surge=st.booleans(),
)
def test_scoped_commands_are_the_full_reconciles_commands_for_those_nodes(
    changes: list[tuple[str, str]], surge: bool
) -> None:
    w = _settled(
        nodes=4,
        pod_spec={"nodeSelector": {"role": "agent"}},
        strategy=rolling(max_unavailable=0, max_surge=1) if surge else None,
    )
    for n in ("node-0", "node-1", "node-2", "node-3"):
        w.emit(NodeLabelsChanged(name=n, labels={"role": "agent"}))
    w.execute(w.reconcile())
    w.record(w.reconcile())
    touched = set()
    for node, change in changes:
        touched.add(node)
        match change:
            case "label":
                w.emit(NodeLabelsChanged(name=node, labels={"role": "agent"}))
            case "unlabel":
                w.emit(NodeLabelsChanged(name=node, labels={}))
            case "noschedule" | "noexecute":
                effect = "NoSchedule" if change == "noschedule" else "NoExecute"
                w.emit(NodeTaintsChanged(name=node, taints=(Taint(key="k", effect=effect),)))
            case "untaint":
                w.emit(NodeTaintsChanged(name=node, taints=()))
    scoped = reconcile_nodes(w.state, KEY, sorted(touched), w.now)
    full = reconcile(w.state, KEY, w.now)
    assert scoped is not None
    scoped_commands = scoped.decision.commands if scoped.decision else ()
    full_commands = full.decision.commands if full.decision else ()
    assert {_key(c) for c in scoped_commands} <= {_key(c) for c in full_commands}
    full_on_touched = {_key(c) for c in full_commands if c.node in touched}
    assert {_key(c) for c in scoped_commands} == full_on_touched


def test_the_selector_fixture_is_what_the_world_uses() -> None:
    w = _settled()
    assert w.ds().spec.selector == LabelSelector(match_labels=w.ds().spec.template.metadata.labels)
