"""What each event does to the read model, one rule per test."""

from __future__ import annotations

from datetime import timedelta

from events.envelope import wrap
from events.k8s import DaemonSetSpec, LabelSelector, PodTemplate, TemplateMetadata
from events.template_hash import template_hash
from events.types import (
    CreatePod,
    DaemonSetApplied,
    DaemonSetDeleted,
    DecisionRecorded,
    DeletePod,
    Event,
    NodeCordoned,
    NodeLabelsChanged,
    NodeRegistered,
    NodeRemoved,
    NodeUncordoned,
    PodCreated,
    PodDeleted,
    PodNotReady,
    PodReady,
    PodTerminating,
)
from projections.model import ClusterState
from projections.replay import replay
from tests.projections.histories import T0


def fold(*evs: Event) -> ClusterState:
    return replay(
        [
            (i + 1, wrap(e, id=f"e{i}", occurred_at=T0 + timedelta(seconds=10 * i), source="t"))
            for i, e in enumerate(evs)
        ]
    )


def tpl(image: str) -> PodTemplate:
    return PodTemplate(
        metadata=TemplateMetadata(labels={"app": "x"}), spec={"containers": [{"image": image}]}
    )


def applied(image: str = "v1", uid: str = "u1", gen: int = 1, cause: str = "") -> DaemonSetApplied:
    t = tpl(image)
    return DaemonSetApplied(
        namespace="default",
        name="ds",
        uid=uid,
        generation=gen,
        template_hash=template_hash(t),
        spec=DaemonSetSpec(template=t, selector=LabelSelector(match_labels={"app": "x"})),
        annotations={"kubernetes.io/change-cause": cause} if cause else {},
    )


def created(name: str = "ds-a", node: str = "n1", owner: str = "u1", cmd: str = "") -> PodCreated:
    return PodCreated(
        namespace="default",
        name=name,
        node=node,
        uid=name + "-uid",
        owner_uid=owner,
        owner_name="ds",
        revision_hash="h",
        command_id=cmd,
    )


def create_cmd(cid: str, pod: str = "ds-a", node: str = "n1") -> CreatePod:
    return CreatePod(
        id=cid,
        node=node,
        namespace="default",
        pod_name=pod,
        pod_uid="pu",
        owner_uid="u1",
        owner_name="ds",
        revision_hash="h",
        template=tpl("v1"),
    )


def decided(*cmds: CreatePod | DeletePod) -> DecisionRecorded:
    return DecisionRecorded(
        namespace="default",
        name="ds",
        uid="u1",
        generation=1,
        now=T0,
        state_seq=1,
        template_hash="h",
        commands=cmds,
    )


def test_node_facts_overwrite_the_node() -> None:
    s = fold(
        NodeRegistered(name="n1", labels={"a": "1"}),
        NodeLabelsChanged(name="n1", labels={"b": "2"}),
        NodeCordoned(name="n1"),
    )
    assert s.nodes["n1"].labels == {"b": "2"}
    assert s.nodes["n1"].unschedulable
    assert (
        not fold(NodeRegistered(name="n1"), NodeCordoned(name="n1"), NodeUncordoned(name="n1"))
        .nodes["n1"]
        .unschedulable
    )


def test_re_registering_a_node_keeps_its_creation_time() -> None:
    s = fold(NodeRegistered(name="n1"), NodeRegistered(name="n1", labels={"x": "y"}))
    assert s.nodes["n1"].created_at == T0.timestamp()
    assert s.nodes["n1"].labels == {"x": "y"}


def test_facts_about_an_unknown_node_are_ignored() -> None:
    s = fold(NodeLabelsChanged(name="ghost", labels={"a": "b"}))
    assert s.nodes == {}
    assert s.seq == 1


def test_removing_a_node_garbage_collects_its_pods_and_commands() -> None:
    s = fold(
        NodeRegistered(name="n1"),
        applied(),
        created(),
        decided(create_cmd("c9", pod="ds-b")),
        NodeRemoved(name="n1"),
    )
    assert s.pods == {}
    assert s.pods_by_node == {}
    assert s.in_flight == {}


def test_a_new_template_adds_a_revision_and_rollback_rolls_forward() -> None:
    s = fold(applied("v1"), applied("v2", gen=2), applied("v1", gen=3, cause="undo"))
    revs = s.daemonsets["default/ds"].revisions
    assert revs[template_hash(tpl("v2"))].number == 2
    assert revs[template_hash(tpl("v1"))].number == 3
    assert revs[template_hash(tpl("v1"))].change_cause == "undo"


def test_re_applying_the_current_template_adds_no_revision() -> None:
    s = fold(applied("v1"), applied("v1", gen=1))
    assert [r.number for r in s.daemonsets["default/ds"].revisions.values()] == [1]


def test_a_daemonset_recreated_under_the_same_name_starts_a_fresh_history() -> None:
    s = fold(applied("v1"), applied("v2", gen=2), applied("v1", uid="u2"))
    ds = s.daemonsets["default/ds"]
    assert ds.uid == "u2"
    assert [r.number for r in ds.revisions.values()] == [1]


def test_orphan_delete_strips_the_owner_from_the_pods() -> None:
    s = fold(
        applied(),
        created(),
        DaemonSetDeleted(namespace="default", name="ds", uid="u1", propagation_policy="Orphan"),
    )
    assert "default/ds" not in s.daemonsets
    assert s.pods["default/ds-a"].owner_uid == ""
    assert s.deleted == {}


def test_background_delete_leaves_the_pods_to_collect_until_the_last_is_gone() -> None:
    gone = DaemonSetDeleted(namespace="default", name="ds", uid="u1", propagation_policy="Background")
    s = fold(applied(), created(), gone)
    assert "default/ds" not in s.daemonsets
    assert "u1" in s.deleted
    s = fold(applied(), created(), gone, PodDeleted(namespace="default", name="ds-a", node="n1"))
    assert s.deleted == {}


def test_foreground_delete_keeps_the_daemonset_until_its_pods_are_gone() -> None:
    gone = DaemonSetDeleted(namespace="default", name="ds", uid="u1", propagation_policy="Foreground")
    s = fold(applied(), created(), gone)
    assert s.daemonsets["default/ds"].deleting
    s = fold(applied(), created(), gone, PodDeleted(namespace="default", name="ds-a", node="n1"))
    assert "default/ds" not in s.daemonsets


def test_deleting_a_daemonset_without_pods_removes_it_at_once() -> None:
    s = fold(
        applied(), DaemonSetDeleted(namespace="default", name="ds", uid="u1", propagation_policy="Foreground")
    )
    assert s.daemonsets == {}
    assert s.deleted == {}


def test_a_delete_for_another_uid_is_ignored() -> None:
    s = fold(applied(), DaemonSetDeleted(namespace="default", name="ds", uid="old"))
    assert "default/ds" in s.daemonsets


def test_ready_records_when_the_pod_became_ready_and_not_ready_clears_it() -> None:
    s = fold(
        created(),
        PodReady(namespace="default", name="ds-a", node="n1"),
        PodReady(namespace="default", name="ds-a", node="n1"),
    )
    pod = s.pods["default/ds-a"]
    assert pod.ready and pod.phase == "Running"
    assert pod.ready_since == (T0 + timedelta(seconds=10)).timestamp()  # the first Ready, not the repeat
    s = fold(
        created(),
        PodReady(namespace="default", name="ds-a", node="n1"),
        PodNotReady(namespace="default", name="ds-a", node="n1"),
    )
    assert s.pods["default/ds-a"].ready_since is None


def test_a_redelivered_creation_report_changes_nothing() -> None:
    s = fold(created(), PodReady(namespace="default", name="ds-a", node="n1"), created())
    assert s.pods["default/ds-a"].ready


def test_a_create_command_is_in_flight_until_the_pod_is_reported() -> None:
    s = fold(applied(), decided(create_cmd("c1")))
    assert set(s.in_flight) == {"c1"}
    assert s.in_flight["c1"].kind == "create_pod"
    assert s.in_flight_by_ds == {"default/ds": {"c1"}}
    s = fold(applied(), decided(create_cmd("c1")), created(cmd="c1"))
    assert s.in_flight == {}
    assert s.in_flight_by_ds == {}


def test_a_delete_command_is_answered_by_terminating_or_by_the_pod_going() -> None:
    delete = DeletePod(id="d1", node="n1", namespace="default", pod_name="ds-a")
    s = fold(
        applied(),
        created(),
        decided(delete),
        PodTerminating(namespace="default", name="ds-a", node="n1", command_id="d1"),
    )
    assert s.in_flight == {}
    assert s.pods["default/ds-a"].deletion_timestamp is not None
    s = fold(applied(), created(), decided(delete), PodDeleted(namespace="default", name="ds-a", node="n1"))
    assert s.in_flight == {}


def test_a_decision_records_status_backoff_and_adoption() -> None:
    from events.types import DaemonSetStatus, FailedPodBackoff

    d = DecisionRecorded(
        namespace="default",
        name="ds",
        uid="u1",
        generation=2,
        now=T0,
        state_seq=3,
        template_hash="h",
        status=DaemonSetStatus(observed_generation=2, desired_number_scheduled=3),
        backoffs=(FailedPodBackoff(node="n1", generation=2, delay_seconds=4.0, until=T0),),
        adopted=("default/orphan",),
    )
    s = fold(applied(), created(name="orphan", owner=""), d)
    ds = s.daemonsets["default/ds"]
    assert ds.observed_generation == 2
    assert ds.status.desired_number_scheduled == 3
    assert ds.backoffs["n1"].delay_seconds == 4.0
    assert s.pods["default/orphan"].owner_uid == "u1"
    assert s.pods_by_owner["u1"] == {"default/orphan"}
    assert ds.last_decision_seq == 3
