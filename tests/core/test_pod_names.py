"""Generated pod names never collide: with 27^5 suffixes a fleet of thousands would otherwise hit the
birthday bound, and a second pod under an existing name would be lost."""

from __future__ import annotations

from engine.core.plan import Plan, PlannedCreate
from engine.core.pod_template import pod_name
from engine.core.reconcile import assign_pod_names
from events.k8s import DaemonSetSpec, LabelSelector, PodTemplate
from projections.model import ClusterState, DaemonSetState, InFlight, PodState


def _ds() -> DaemonSetState:
    return DaemonSetState(
        namespace="default", name="ds", uid="u1", generation=1, template_hash="h",
        spec=DaemonSetSpec(template=PodTemplate(), selector=LabelSelector(match_labels={"a": "b"})),
    )  # fmt: skip


def test_a_name_taken_by_an_existing_pod_is_skipped() -> None:
    ds, state = _ds(), ClusterState(seq=7)
    first = pod_name("ds", "u1", "n1", 7)
    state.pods[f"default/{first}"] = PodState(namespace="default", name=first, uid="x", node="n9")
    plan = Plan(creates=[PlannedCreate("n1", "MissingPod", "m")])
    assign_pod_names(state, ds, plan)
    assert plan.pod_names["n1"] != first
    assert plan.pod_names["n1"] == pod_name("ds", "u1", "n1", 7, 1)


def test_a_name_in_flight_is_skipped() -> None:
    ds, state = _ds(), ClusterState(seq=3)
    first = pod_name("ds", "u1", "n1", 3)
    state.in_flight_by_pod[f"default/{first}"] = {"c1"}
    state.in_flight["c1"] = InFlight(
        command_id="c1",
        kind="create_pod",
        ds_key="default/ds",
        node="n2",
        namespace="default",
        pod_name=first,
        issued_at=0.0,
        decision_seq=2,
    )
    plan = Plan(creates=[PlannedCreate("n1", "MissingPod", "m")])
    assign_pod_names(state, ds, plan)
    assert plan.pod_names["n1"] != first


def test_names_chosen_in_one_decision_are_distinct_and_deterministic() -> None:
    ds, state = _ds(), ClusterState(seq=1)
    creates = [PlannedCreate(f"n{i}", "MissingPod", "m") for i in range(20_000)]
    plan, again = Plan(creates=list(creates)), Plan(creates=list(creates))
    assign_pod_names(state, ds, plan)
    assign_pod_names(state, ds, again)
    assert len(set(plan.pod_names.values())) == 20_000
    assert plan.pod_names == again.pod_names
