"""One DaemonSet's view of the fleet for one reconcile: per node, its eligibility and its daemon pods.

This is upstream's ``getNodesToDaemonPods`` joined with ``NodeShouldRunDaemonPod``. Pods are the
claimed ones (docs/upstream-semantics.md A.7) grouped by their node; terminal pods that are also being
deleted are left out, while non-terminal deleting pods stay in (docs/upstream-semantics.md A.4). Nodes are in
name order, the engine's fixed iteration order where upstream iterates a Go map.

Departure: pods bound to a node missing from the read model are not mapped at all. Upstream deletes
only *unscheduled* pods aimed at a missing node and leaves bound ones to the pod garbage collector;
every pod here is bound (an executor reported it from its node), and the fold plays the pod GC when a
node is removed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import msgspec

from engine.core.eligibility import Eligibility, Placement, evaluate
from engine.core.pods import sort_key
from projections.model import ClusterState, DaemonSetState, NodeState, PodState


class EligibilityMemo:
    """Eligibility results kept across reconciles, keyed by what fully determines them: the template
    (its hash) and the node as of its last change (name, ``updated_seq``). A pure cache: a reconcile
    with a memo decides exactly what one without decides, only without re-checking 5,000 unchanged
    nodes against an unchanged template every time. Bounded: cleared when it outgrows ``limit``."""

    def __init__(self, limit: int = 500_000) -> None:
        self._by_key: dict[tuple[str, str, int], Eligibility] = {}
        self.limit = limit

    def get(self, template_hash: str, placement: Placement, node: NodeState) -> Eligibility:
        key = (template_hash, node.name, node.updated_seq)
        found = self._by_key.get(key)
        if found is None:
            if len(self._by_key) >= self.limit:
                self._by_key.clear()
            found = self._by_key[key] = evaluate(placement, node)
        return found


class NodeView(msgspec.Struct):
    name: str
    eligibility: Eligibility
    #: daemon pods mapped to this node, upstream's sort order (oldest first)
    pods: list[PodState]


def node_views(
    state: ClusterState,
    placement: Placement,
    pods: Iterable[PodState],
    memo: EligibilityMemo | None = None,
    template_hash: str = "",
) -> list[NodeView]:
    by_node: dict[str, list[PodState]] = {}
    for pod in pods:
        if pod.terminal and pod.deletion_timestamp is not None:
            continue
        if pod.node in state.nodes:
            by_node.setdefault(pod.node, []).append(pod)
    views = []
    nodes = state.nodes
    if memo is not None and len(memo._by_key) + len(nodes) >= memo.limit:
        memo._by_key.clear()  # bounded, as ``get`` keeps it; then filled below without a check per node
    known = memo._by_key if memo is not None else None
    for name in sorted(nodes):
        found = by_node.get(name)
        mapped = (sorted(found, key=sort_key) if len(found) > 1 else found) if found else []
        node = nodes[name]
        if known is None:
            eligibility = evaluate(placement, node)
        else:
            # ``EligibilityMemo.get`` inlined: this loop runs once per node per full reconcile
            key = (template_hash, name, node.updated_seq)
            cached = known.get(key)
            if cached is None:
                cached = known[key] = evaluate(placement, node)
            eligibility = cached
        views.append(NodeView(name=name, eligibility=eligibility, pods=mapped))
    return views


def with_extra_pods(views: list[NodeView], extra: Iterable[PodState]) -> list[NodeView]:
    """The views as they will be once ``extra`` pods (created by this decision, or in flight) exist."""
    added: dict[str, list[PodState]] = {}
    for pod in extra:
        added.setdefault(pod.node, []).append(pod)
    if not added:
        return views
    out = list(views)
    for name, pods in added.items():
        # views come in name order (``node_views``): find the few changed ones by bisection rather than
        # looking at 5,000; a view out of order is still found by the scan
        i = bisect.bisect_left(views, name, key=_name_of)
        if not (i < len(views) and views[i].name == name):
            i = next((j for j, v in enumerate(views) if v.name == name), -1)
            if i < 0:
                continue
        v = views[i]
        out[i] = NodeView(name=v.name, eligibility=v.eligibility, pods=sorted(v.pods + pods, key=sort_key))
    return out


def _name_of(view: NodeView) -> str:
    return view.name


def virtual_pod(
    ds: DaemonSetState, node: str, name: str, created_at: float, revision: str | None = None
) -> PodState:
    """A pod that a create command will produce: Pending, not Ready, on ``revision`` (default: current)."""
    return PodState(
        namespace=ds.namespace,
        name=name,
        uid="",
        node=node,
        owner_uid=ds.uid,
        owner_name=ds.name,
        revision_hash=ds.template_hash if revision is None else revision,
        labels=dict(ds.spec.template.metadata.labels),
        phase="Pending",
        created_at=created_at,
    )
