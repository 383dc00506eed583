"""Random but coherent event histories: few names, so events collide on the same nodes, DaemonSets and
pods the way a real log does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from events.envelope import Envelope, wrap
from events.k8s import DaemonSetSpec, LabelSelector, NodeCondition, PodTemplate, Taint, TemplateMetadata
from events.template_hash import template_hash
from events.types import (
    CreatePod,
    DaemonSetApplied,
    DaemonSetDeleted,
    DaemonSetStatus,
    DecisionRecorded,
    DeletePod,
    Event,
    FailedPodBackoff,
    LeaderElected,
    NodeConditionChanged,
    NodeCordoned,
    NodeLabelsChanged,
    NodeRegistered,
    NodeRemoved,
    NodeTaintsChanged,
    NodeUncordoned,
    PodCreated,
    PodDeleted,
    PodFailed,
    PodNotReady,
    PodReady,
    PodRunning,
    PodTerminating,
)

NODES = ["n0", "n1", "n2"]
DSS = ["a", "b"]
PODS = ["a-1", "a-2", "b-1", "x-1"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

labels = st.dictionaries(st.sampled_from(["gpu", "zone"]), st.sampled_from(["true", "z1"]), max_size=2)
taints = st.lists(
    st.builds(
        Taint, key=st.sampled_from(["dedicated", "gpu"]), effect=st.sampled_from(["NoSchedule", "NoExecute"])
    ),
    max_size=2,
).map(tuple)


def _template(image: str) -> PodTemplate:
    return PodTemplate(
        metadata=TemplateMetadata(labels={"app": "x"}), spec={"containers": [{"image": image}]}
    )


@st.composite
def daemonset_applied(draw: st.DrawFn) -> DaemonSetApplied:
    name = draw(st.sampled_from(DSS))
    tpl = _template(draw(st.sampled_from(["v1", "v2", "v3"])))
    return DaemonSetApplied(
        namespace="default",
        name=name,
        uid=draw(st.sampled_from([f"{name}-uid1", f"{name}-uid2"])),
        generation=draw(st.integers(1, 5)),
        spec=DaemonSetSpec(template=tpl, selector=LabelSelector(match_labels={"app": "x"})),
        template_hash=template_hash(tpl),
        annotations=draw(st.sampled_from([{}, {"kubernetes.io/change-cause": "edit"}])),
    )


pod_fields: dict[str, Any] = {
    "namespace": st.just("default"),
    "name": st.sampled_from(PODS),
    "node": st.sampled_from(NODES),
    "command_id": st.sampled_from(["", "c1", "c2", "c3"]),
}


@st.composite
def decision(draw: st.DrawFn) -> DecisionRecorded:
    name = draw(st.sampled_from(DSS))
    node = draw(st.sampled_from(NODES))
    cmd_id = draw(st.sampled_from(["c1", "c2", "c3"]))
    pod = draw(st.sampled_from(PODS))
    cmd: CreatePod | DeletePod
    if draw(st.booleans()):
        cmd = CreatePod(
            id=cmd_id,
            node=node,
            namespace="default",
            pod_name=pod,
            pod_uid=pod + "-uid",
            owner_uid=f"{name}-uid1",
            owner_name=name,
            revision_hash="h",
            template=_template("v1"),
        )
    else:
        cmd = DeletePod(id=cmd_id, node=node, namespace="default", pod_name=pod)
    return DecisionRecorded(
        namespace="default",
        name=name,
        uid=f"{name}-uid1",
        generation=1,
        now=T0,
        state_seq=0,
        template_hash="h",
        commands=(cmd,),
        status=DaemonSetStatus(observed_generation=draw(st.integers(0, 3))),
        backoffs=draw(
            st.lists(
                st.builds(
                    FailedPodBackoff,
                    node=st.sampled_from(NODES),
                    generation=st.just(1),
                    delay_seconds=st.just(2.0),
                    until=st.just(T0),
                ),
                max_size=1,
            ).map(tuple)
        ),
        adopted=draw(st.lists(st.sampled_from(["default/x-1", "default/a-1"]), max_size=1).map(tuple)),
    )


events: st.SearchStrategy[Event] = st.one_of(
    st.builds(NodeRegistered, name=st.sampled_from(NODES), labels=labels, taints=taints),
    st.builds(NodeLabelsChanged, name=st.sampled_from(NODES), labels=labels),
    st.builds(NodeTaintsChanged, name=st.sampled_from(NODES), taints=taints),
    st.builds(NodeCordoned, name=st.sampled_from(NODES)),
    st.builds(NodeUncordoned, name=st.sampled_from(NODES)),
    st.builds(
        NodeConditionChanged,
        name=st.sampled_from(NODES),
        condition=st.builds(NodeCondition, type=st.just("Ready"), status=st.sampled_from(["True", "False"])),
    ),
    st.builds(NodeRemoved, name=st.sampled_from(NODES)),
    daemonset_applied(),
    st.builds(
        DaemonSetDeleted,
        namespace=st.just("default"),
        name=st.sampled_from(DSS),
        uid=st.sampled_from(["a-uid1", "b-uid1"]),
        propagation_policy=st.sampled_from(["Background", "Foreground", "Orphan"]),
    ),
    st.builds(
        PodCreated,
        **pod_fields,
        uid=st.just("u"),
        owner_uid=st.sampled_from(["", "a-uid1", "b-uid1"]),
        owner_name=st.sampled_from(["a", "b"]),
        revision_hash=st.just("h"),
    ),
    st.builds(PodRunning, **pod_fields),
    st.builds(PodReady, **pod_fields),
    st.builds(PodNotReady, **pod_fields),
    st.builds(PodFailed, **pod_fields),
    st.builds(PodTerminating, **pod_fields),
    st.builds(PodDeleted, **pod_fields),
    decision(),
    # the same source as every event here: decisions after it are refused (their ids name no fence)
    st.builds(LeaderElected, holder=st.just("test"), epoch=st.integers(1, 3)),
)


def envelop(evs: list[Event]) -> list[tuple[int, Envelope]]:
    return [
        (i + 1, wrap(ev, id=f"e{i + 1}", occurred_at=T0 + timedelta(seconds=i), source="test"))
        for i, ev in enumerate(evs)
    ]


histories = st.lists(events, max_size=40).map(envelop)
