"""Which DaemonSet keys an event can affect: the reconciler's queue holds keys, and this decides them.

Level-based like upstream's handlers (docs/upstream-semantics.md A.8): an event never carries a decision,
it only says "look at these DaemonSets again". The rules:

- a DaemonSet fact: that DaemonSet;
- a pod report: its owner, or, for an orphan, the DaemonSets in its namespace whose selector matches it
  (they may adopt it);
- a node fact: each DaemonSet for which the node's (shouldRun, shouldContinueRunning) pair changed, or
  that should run there and has no pod, or has a pod there it may not keep, or has misscheduled pods
  (upstream PR #130514 and #132477). This costs one eligibility check per DaemonSet against the one
  node that changed, never a scan of the fleet; placements are decoded once per template hash.
- a decision: nothing (the controller requeues its own keys from the reconcile result).
"""

from __future__ import annotations

from engine.core import selectors
from engine.core.eligibility import Eligibility, Placement, evaluate, placement
from events.types import (
    DaemonSetApplied,
    DaemonSetDeleted,
    Event,
    NodeConditionChanged,
    NodeRemoved,
    PodCreated,
    PodEvent,
)
from projections.model import ClusterState, DaemonSetState, NodeState, object_key


class PlacementCache:
    """Decoded scheduling fields per template hash (a template never changes under its hash)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Placement] = {}

    def of(self, ds: DaemonSetState) -> Placement:
        where = self._by_hash.get(ds.template_hash)
        if where is None:
            where = placement(ds.spec.template)
            self._by_hash[ds.template_hash] = where
        return where


class Before:
    """What must be remembered from the state before an event is folded (the fold mutates in place)."""

    __slots__ = ("node", "owners", "pod_owner")

    def __init__(
        self, node: NodeState | None = None, pod_owner: str | None = None, owners: tuple[str, ...] = ()
    ) -> None:
        self.node = node
        self.pod_owner = pod_owner
        #: for a node removal: the DaemonSets that had pods there
        self.owners = owners


def before(state: ClusterState, event: Event) -> Before:
    """Capture, before folding ``event``, the parts of the state it may overwrite."""
    if isinstance(event, PodEvent):
        pod = state.pods.get(object_key(event.namespace, event.name))
        owner = object_key(pod.namespace, pod.owner_name) if pod is not None and pod.owner_uid else None
        return Before(pod_owner=owner)
    if isinstance(event, NodeRemoved):
        owners = {
            object_key(pod.namespace, pod.owner_name)
            for key in state.pods_by_node.get(event.name, ())
            if (pod := state.pods[key]).owner_uid
        }
        return Before(owners=tuple(sorted(owners)))
    name = getattr(event, "name", None) if type(event).TAG.startswith("node.") else None
    if isinstance(name, str):
        node = state.nodes.get(name)
        # the fold replaces a node's labels/taints/conditions with new objects, so a shallow copy
        # keeps the old values
        if node is not None:
            return Before(node=NodeState(**{f: getattr(node, f) for f in NodeState.__struct_fields__}))
    return Before()


def _pods_of_on(state: ClusterState, ds: DaemonSetState, node: str) -> bool:
    on_node = state.pods_by_node.get(node)
    owned = state.pods_by_owner.get(ds.uid)
    if not on_node or not owned:
        return False
    small, large = (on_node, owned) if len(on_node) <= len(owned) else (owned, on_node)
    return any(k in large for k in small)


def affected_keys(state: ClusterState, event: Event, prior: Before, cache: PlacementCache) -> list[str]:
    """The DaemonSet keys to reconcile after ``event`` has been folded into ``state``."""
    match event:
        case DaemonSetApplied() | DaemonSetDeleted():
            return [object_key(event.namespace, event.name)]
        case PodEvent():
            return _pod_keys(state, event, prior)
        case NodeConditionChanged():
            # conditions never change eligibility: only taints count (docs/upstream-semantics.md A.2)
            return []
        case NodeRemoved():
            # its pods were collected by the fold: every DaemonSet that had one there must recount
            return list(prior.owners)
        case _ if type(event).TAG.startswith("node."):
            name = getattr(event, "name", "")
            node = state.nodes.get(name)
            if node is None:
                return []
            return _node_keys(state, node, prior.node, cache)
        case _:
            return []


def _pod_keys(state: ClusterState, event: PodEvent, prior: Before) -> list[str]:
    if prior.pod_owner is not None:
        return [prior.pod_owner]
    pod = state.pods.get(object_key(event.namespace, event.name))
    if pod is not None and pod.owner_uid:
        return [object_key(pod.namespace, pod.owner_name)]
    if isinstance(event, PodCreated) and not event.owner_uid:
        labels = event.labels
        return sorted(
            ds.key
            for ds in state.daemonsets.values()
            if ds.namespace == event.namespace and selectors.matches(ds.spec.selector, labels)
        )
    return []


def _node_keys(
    state: ClusterState, node: NodeState, old: NodeState | None, cache: PlacementCache
) -> list[str]:
    keys = []
    for ds in state.daemonsets.values():
        where = cache.of(ds)
        now = evaluate(where, node)
        has_pod = _pods_of_on(state, ds, node.name)
        if (
            (now.should_run and not has_pod)
            or (not now.should_continue_running and has_pod)
            or (has_pod and ds.status.number_misscheduled > 0)
            or (old is not None and _pair(evaluate(where, old)) != _pair(now))
        ):
            keys.append(ds.key)
    return sorted(keys)


def _pair(e: Eligibility) -> tuple[bool, bool]:
    return (e.should_run, e.should_continue_running)
