"""The fold: ``apply(state, envelope, seq)`` takes the read model one event further.

Level facts (a node's labels, a pod's phase) overwrite; nothing here decides anything. Three rules stand
in for cluster machinery that has no log of its own, and are applied here so every replay agrees:

- **Pod garbage collection on node removal.** ``node.removed`` drops the pods bound to that node and the
  commands in flight for it (upstream leaves this to the pod GC, docs/upstream-semantics.md A.5).
- **Orphan cascade.** ``daemonset.deleted`` with policy Orphan strips the owner from its pods
  (docs/upstream-semantics.md A.12).
- **Background/foreground cascade.** The DaemonSet leaves ``daemonsets`` (background) or stays marked
  ``deleting`` (foreground) until its last pod is reported gone; the reconciler deletes those pods.

Decisions are taken only from the leader that fenced them (``projections.authority``): a record on
the decision tree no engine wrote is refused, whoever folds the log.

Events about unknown objects (a label change for a node never registered, a report for a pod never
created) are ignored rather than raised: the log is immutable, and one bad input must not stop every
later replay. Ingest validation is where such input is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events.envelope import Envelope
from events.k8s import CHANGE_CAUSE_ANNOTATION
from events.types import (
    CreatePod,
    DaemonSetApplied,
    DaemonSetDeleted,
    DecisionRecorded,
    DeletePod,
    Event,
    EvictPod,
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
    PodEvent,
    PodEvicted,
    PodFailed,
    PodNotReady,
    PodReady,
    PodRunning,
    PodSucceeded,
    PodTerminating,
)
from projections.authority import judge
from projections.model import (
    Backoff,
    ClusterState,
    DaemonSetState,
    InFlight,
    NodeState,
    PodState,
    Revision,
    Timestamp,
    object_key,
)
from projections.sharing import shared_labels, shared_text


def apply(state: ClusterState, envelope: Envelope, seq: int) -> ClusterState:
    """Fold one stored event (at stream sequence ``seq``) into ``state``, in place; returns it.

    A decision the decision tree's rules refuse (``projections.authority.judge``: not fenced by the
    current leader) moves only the sequence: its clock, status, ownership and commands are not taken."""
    state.seq = seq
    state.last_id = envelope.id
    data = envelope.data
    kind = type(data)
    if kind in _TREE_RECORDS and judge(state.authority, envelope, seq):
        return state
    at = envelope.occurred_at.timestamp()
    state.last_time = at
    handler = _HANDLERS.get(kind)
    if handler is not None:
        handler(state, data, seq, at)
    else:
        _apply_other(state, data, seq, at)
    return state


def apply_event(state: ClusterState, event: Event, seq: int, at: Timestamp) -> None:
    """Fold one event's payload (already judged, see ``apply``). Dispatch is by exact type through
    ``_HANDLERS``: an ``isinstance`` chain (or ``match``) costs a few hundred ns per event on msgspec
    Structs, a dict lookup tens (docs/benchmarks.md, ``fold``)."""
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event, seq, at)
    else:
        _apply_other(state, event, seq, at)


def _apply_other(state: ClusterState, event: Event, seq: int, at: Timestamp) -> None:
    """A type without a handler of its own: a subclass of a known type, or a tag this fold does not
    read (forward compatibility: ignored)."""
    match event:
        case PodEvent():
            _apply_pod(state, event, seq, at)
        case DecisionRecorded():
            _apply_decision(state, event, seq, at)
        case NodeRegistered():
            _node_registered(state, event, seq, at)
        case NodeLabelsChanged():
            _node_labels(state, event, seq, at)
        case NodeTaintsChanged():
            _node_taints(state, event, seq, at)
        case NodeCordoned() | NodeUncordoned():
            _node_cordon(state, event, seq, at)
        case NodeConditionChanged():
            _node_condition(state, event, seq, at)
        case NodeRemoved():
            _remove_node(state, event.name)
        case DaemonSetApplied():
            _apply_daemonset(state, event, seq, at)
        case DaemonSetDeleted():
            _delete_daemonset(state, event, at)
        case _:
            pass


# --- nodes ---------------------------------------------------------------------------------------------


def _node_registered(state: ClusterState, event: NodeRegistered, seq: int, at: Timestamp) -> None:
    old = state.nodes.get(event.name)
    state.nodes[event.name] = NodeState(
        name=event.name,
        labels=dict(event.labels),
        taints=list(event.taints),
        unschedulable=event.unschedulable,
        conditions={c.type: c for c in event.conditions},
        capacity=dict(event.capacity),
        created_at=old.created_at if old is not None else at,
        updated_seq=seq,
    )


def _node_labels(state: ClusterState, event: NodeLabelsChanged, seq: int, at: Timestamp) -> None:
    if (node := state.nodes.get(event.name)) is not None:
        node.labels = dict(event.labels)
        node.updated_seq = seq


def _node_taints(state: ClusterState, event: NodeTaintsChanged, seq: int, at: Timestamp) -> None:
    if (node := state.nodes.get(event.name)) is not None:
        node.taints = list(event.taints)
        node.updated_seq = seq


def _node_cordon(state: ClusterState, event: NodeCordoned | NodeUncordoned, seq: int, at: Timestamp) -> None:
    if (node := state.nodes.get(event.name)) is not None:
        node.unschedulable = isinstance(event, NodeCordoned)
        node.updated_seq = seq


def _node_condition(state: ClusterState, event: NodeConditionChanged, seq: int, at: Timestamp) -> None:
    if (node := state.nodes.get(event.name)) is not None:
        node.conditions = {**node.conditions, event.condition.type: event.condition}
        node.updated_seq = seq


def _node_removed(state: ClusterState, event: NodeRemoved, seq: int, at: Timestamp) -> None:
    _remove_node(state, event.name)


def _remove_node(state: ClusterState, name: str) -> None:
    state.nodes.pop(name, None)
    for pod_key in list(state.pods_by_node.get(name, ())):
        _drop_pod(state, pod_key)
    state.pods_by_node.pop(name, None)
    for cmd_id in [c.command_id for c in state.in_flight.values() if c.node == name]:
        _clear_in_flight(state, cmd_id)


# --- DaemonSets ----------------------------------------------------------------------------------------


def _apply_daemonset(state: ClusterState, event: DaemonSetApplied, seq: int, at: Timestamp) -> None:
    key = object_key(event.namespace, event.name)
    ds = state.daemonsets.get(key)
    if ds is None or ds.uid != event.uid:
        if ds is not None:  # replaced under the same name by a new object: the old one is gone
            _forget_daemonset(state, ds)
        ds = DaemonSetState(
            namespace=event.namespace,
            name=event.name,
            uid=event.uid,
            generation=event.generation,
            spec=event.spec,
            template_hash=event.template_hash,
            template_generation=1,
            labels=dict(event.labels),
            annotations=dict(event.annotations),
            created_at=at,
            applied_seq=seq,
            revisions={},
            backoffs={},
        )
        state.daemonsets[key] = ds
    else:
        if event.template_hash != ds.template_hash:
            ds.template_generation += 1
        ds.generation = event.generation
        ds.spec = event.spec
        ds.template_hash = event.template_hash
        ds.labels = dict(event.labels)
        ds.annotations = dict(event.annotations)
        ds.applied_seq = seq
    # revisions only roll forward (docs/upstream-semantics.md A.10): re-using an old template renumbers its
    # revision
    top = max((r.number for r in ds.revisions.values()), default=0)
    rev = ds.revisions.get(event.template_hash)
    cause = event.annotations.get(CHANGE_CAUSE_ANNOTATION, "")
    if rev is None:
        ds.revisions[event.template_hash] = Revision(
            hash=event.template_hash,
            number=top + 1,
            template=event.spec.template,
            change_cause=cause,
            created_at=at,
            template_generation=ds.template_generation,
        )
    else:
        if rev.number < top:
            rev.number = top + 1
            rev.change_cause = cause or rev.change_cause
        rev.template_generation = ds.template_generation


def _delete_daemonset(state: ClusterState, event: DaemonSetDeleted, at: Timestamp) -> None:
    key = object_key(event.namespace, event.name)
    ds = state.daemonsets.get(key)
    if ds is None or ds.uid != event.uid:
        return
    ds.deleted_at = at
    owned = state.pods_by_owner.get(ds.uid, set())
    if event.propagation_policy == "Orphan":
        for pod_key in owned:
            pod = state.pods[pod_key]
            pod.owner_uid = ""
            pod.owner_name = ""
            _orphan(state, pod)
        state.pods_by_owner.pop(ds.uid, None)
        _forget_daemonset(state, ds)
    elif event.propagation_policy == "Foreground" and owned:
        ds.deleting = True
        ds.deletion_policy = "Foreground"
    else:
        _forget_daemonset(state, ds)
        if owned:
            ds.deleting = True
            ds.deletion_policy = event.propagation_policy
            state.deleted[ds.uid] = ds


def _daemonset_deleted(state: ClusterState, event: DaemonSetDeleted, seq: int, at: Timestamp) -> None:
    _delete_daemonset(state, event, at)


def _forget_daemonset(state: ClusterState, ds: DaemonSetState) -> None:
    if state.daemonsets.get(ds.key) is ds:
        del state.daemonsets[ds.key]


def _owner_gone_check(state: ClusterState, owner_uid: str, owner_name: str, namespace: str) -> None:
    """After a pod went away: finish a cascade whose last pod this was."""
    if not owner_uid or state.pods_by_owner.get(owner_uid):
        return
    state.pods_by_owner.pop(owner_uid, None)
    state.deleted.pop(owner_uid, None)
    ds = state.daemonsets.get(object_key(namespace, owner_name))
    if ds is not None and ds.uid == owner_uid and ds.deleting:
        del state.daemonsets[ds.key]


# --- pods ----------------------------------------------------------------------------------------------


_TERMINAL = frozenset(("Succeeded", "Failed"))


def _pod_created(state: ClusterState, event: PodCreated, seq: int, at: Timestamp) -> None:
    key = f"{event.namespace}/{event.name}"  # object_key, inlined: this runs for every pod
    if key in state.pods:
        return  # a redelivered report: the first one counts
    pod = PodState(  # what pods hold alike is held once (projections.sharing)
        namespace=shared_text(event.namespace),
        name=event.name,
        uid=event.uid,
        node=shared_text(event.node),
        owner_uid=shared_text(event.owner_uid),
        owner_name=shared_text(event.owner_name),
        revision_hash=shared_text(event.revision_hash),
        labels=shared_labels(event.labels),
        created_at=at,
        created_seq=seq,
        command_id=event.command_id,
    )
    state.pods[key] = pod
    state.pods_by_node.setdefault(pod.node, set()).add(key)
    if pod.owner_uid:
        state.pods_by_owner.setdefault(pod.owner_uid, set()).add(key)
    else:
        _orphan(state, pod)
    _clear_in_flight(state, event.command_id)


def _reported(state: ClusterState, event: PodEvent) -> PodState | None:
    """The pod a report is about; a report of a pod never created still answers its command."""
    pod = state.pods.get(f"{event.namespace}/{event.name}")
    if pod is None:
        _clear_in_flight(state, event.command_id)
    return pod


def _pod_running(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None and pod.phase not in _TERMINAL:
        pod.phase = "Running"


def _pod_ready(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None and pod.phase not in _TERMINAL:
        pod.phase = "Running"
        if not pod.ready:
            pod.ready = True
            pod.ready_since = at


def _pod_not_ready(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None:
        pod.ready = False
        pod.ready_since = None


def _pod_failed(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None:
        pod.phase = "Failed"
        pod.ready = False
        pod.ready_since = None


def _pod_succeeded(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None:
        pod.phase = "Succeeded"
        pod.ready = False
        pod.ready_since = None


def _pod_terminating(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None:
        if pod.deletion_timestamp is None:
            pod.deletion_timestamp = at
        _clear_in_flight(state, event.command_id)


def _pod_gone(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    pod = _reported(state, event)
    if pod is not None:
        _drop_pod(state, pod.key)
        _clear_in_flight(state, event.command_id)


_POD_HANDLERS: tuple[tuple[type[PodEvent], Callable[[ClusterState, Any, int, Timestamp], None]], ...] = (
    (PodCreated, _pod_created),
    (PodRunning, _pod_running),
    (PodReady, _pod_ready),
    (PodNotReady, _pod_not_ready),
    (PodFailed, _pod_failed),
    (PodSucceeded, _pod_succeeded),
    (PodTerminating, _pod_terminating),
    (PodDeleted, _pod_gone),
    (PodEvicted, _pod_gone),
)


def _apply_pod(state: ClusterState, event: PodEvent, seq: int, at: Timestamp) -> None:
    """A pod report of a type without a handler of its own (a subclass): the first matching one."""
    for cls, handler in _POD_HANDLERS:
        if isinstance(event, cls):
            handler(state, event, seq, at)
            return
    _reported(state, event)


def _drop_pod(state: ClusterState, key: str) -> None:
    pod = state.pods.pop(key, None)
    if pod is None:
        return
    on_node = state.pods_by_node.get(pod.node)
    if on_node is not None:
        on_node.discard(key)
        if not on_node:
            del state.pods_by_node[pod.node]
    if pod.owner_uid:
        owned = state.pods_by_owner.get(pod.owner_uid)
        if owned is not None:
            owned.discard(key)
        _owner_gone_check(state, pod.owner_uid, pod.owner_name, pod.namespace)
    else:
        _unorphan(state, pod)
    # a command in flight for this pod is answered by its disappearance, whoever reported it
    for cmd_id in list(state.in_flight_by_pod.get(key, ())):
        _clear_in_flight(state, cmd_id)


# --- decisions -----------------------------------------------------------------------------------------


_COMMAND_KINDS: dict[type, str] = {CreatePod: "create_pod", DeletePod: "delete_pod", EvictPod: "evict_pod"}


def _apply_decision(state: ClusterState, event: DecisionRecorded, seq: int, at: Timestamp) -> None:
    ds_key = object_key(event.namespace, event.name)
    for cmd in event.commands:
        _clear_in_flight(state, cmd.id)  # a re-recorded command replaces its older entry
        state.in_flight[cmd.id] = InFlight(
            command_id=cmd.id,
            kind=_COMMAND_KINDS[type(cmd)],
            ds_key=ds_key,
            node=cmd.node,
            namespace=cmd.namespace,
            pod_name=cmd.pod_name,
            issued_at=at,
            decision_seq=seq,
        )
        state.in_flight_by_ds.setdefault(ds_key, set()).add(cmd.id)
        state.in_flight_by_pod.setdefault(object_key(cmd.namespace, cmd.pod_name), set()).add(cmd.id)
    ds = state.daemonsets.get(ds_key)
    if ds is None or ds.uid != event.uid:
        ds = state.deleted.get(event.uid)
    if ds is None:
        return
    ds.last_decision_seq = seq
    ds.observed_generation = max(ds.observed_generation, event.status.observed_generation)
    ds.status = event.status
    ds.collision_count = max(ds.collision_count, event.status.collision_count)
    for b in event.backoffs:
        ds.backoffs[b.node] = Backoff(
            generation=b.generation, delay_seconds=b.delay_seconds, until=b.until.timestamp()
        )
    for pod_key in event.adopted:
        pod = state.pods.get(pod_key)
        if pod is not None and not pod.owner_uid:
            _unorphan(state, pod)
            pod.owner_uid = ds.uid
            pod.owner_name = ds.name
            state.pods_by_owner.setdefault(ds.uid, set()).add(pod_key)
    for pod_key in event.released:
        pod = state.pods.get(pod_key)
        if pod is not None and pod.owner_uid == ds.uid:
            pod.owner_uid = ""
            pod.owner_name = ""
            _orphan(state, pod)
            owned = state.pods_by_owner.get(ds.uid)
            if owned is not None:
                owned.discard(pod_key)


def _orphan(state: ClusterState, pod: PodState) -> None:
    state.orphans.setdefault(pod.namespace, set()).add(pod.key)


def _unorphan(state: ClusterState, pod: PodState) -> None:
    keys = state.orphans.get(pod.namespace)
    if keys is not None:
        keys.discard(pod.key)
        if not keys:
            del state.orphans[pod.namespace]


def _clear_in_flight(state: ClusterState, command_id: str) -> None:
    if not command_id:
        return
    cmd = state.in_flight.pop(command_id, None)
    if cmd is None:
        return
    _discard(state.in_flight_by_ds, cmd.ds_key, command_id)
    _discard(state.in_flight_by_pod, f"{cmd.namespace}/{cmd.pod_name}", command_id)


def _discard(index: dict[str, set[str]], key: str, command_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(command_id)
        if not ids:
            del index[key]


_TREE_RECORDS = frozenset((DecisionRecorded, LeaderElected))

#: the fold of each event type, by exact type (see ``apply_event``)
_HANDLERS: dict[type, Callable[[ClusterState, Any, int, Timestamp], None]] = {
    **dict(_POD_HANDLERS),
    DecisionRecorded: _apply_decision,
    NodeRegistered: _node_registered,
    NodeLabelsChanged: _node_labels,
    NodeTaintsChanged: _node_taints,
    NodeCordoned: _node_cordon,
    NodeUncordoned: _node_cordon,
    NodeConditionChanged: _node_condition,
    NodeRemoved: _node_removed,
    DaemonSetApplied: _apply_daemonset,
    DaemonSetDeleted: _daemonset_deleted,
}
