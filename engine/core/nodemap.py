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
    """Eligibility results kept across reconciles: per template hash, per node, the result for the
    node as of its last change (``updated_seq``). A pure cache: a reconcile with a memo decides exactly
    what one without decides, only without re-checking 5,000 unchanged nodes against an unchanged
    template every time.

    Bounded by the live fleet, not by history (a one-hour soak of node churn grew the earlier memo,
    keyed by ``(hash, node, updated_seq)``, by a thousand stale entries a minute until a 500,000-entry
    clear): a node's new version replaces its old one, a full pass (``node_views``) drops removed
    nodes, and ``retain`` drops the tables of templates no DaemonSet uses any more."""

    def __init__(self, limit: int = 500_000) -> None:
        self._by_hash: dict[str, dict[str, tuple[int, Eligibility]]] = {}
        #: a backstop over every table together (``retain`` is what keeps it small)
        self.limit = limit

    def __len__(self) -> int:
        return sum(len(table) for table in self._by_hash.values())

    def table(self, template_hash: str) -> dict[str, tuple[int, Eligibility]]:
        found = self._by_hash.get(template_hash)
        if found is None:
            found = self._by_hash[template_hash] = {}
        return found

    def get(self, template_hash: str, placement: Placement, node: NodeState) -> Eligibility:
        table = self.table(template_hash)
        found = table.get(node.name)
        if found is not None and found[0] == node.updated_seq:
            return found[1]
        if len(table) >= self.limit:
            table.clear()
        eligibility = evaluate(placement, node)
        table[node.name] = (node.updated_seq, eligibility)
        return eligibility

    def retain(self, template_hashes: Iterable[str]) -> None:
        """Keep only these templates' tables (the DaemonSets' current templates)."""
        keep = set(template_hashes)
        for stale in [h for h in self._by_hash if h not in keep]:
            del self._by_hash[stale]


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
    known = memo.table(template_hash) if memo is not None else None
    for name in sorted(nodes):
        found = by_node.get(name)
        mapped = (sorted(found, key=sort_key) if len(found) > 1 else found) if found else []
        node = nodes[name]
        if known is None:
            eligibility = evaluate(placement, node)
        else:
            # ``EligibilityMemo.get`` inlined: this loop runs once per node per full reconcile
            cached = known.get(name)
            if cached is not None and cached[0] == node.updated_seq:
                eligibility = cached[1]
            else:
                eligibility = evaluate(placement, node)
                known[name] = (node.updated_seq, eligibility)
        views.append(NodeView(name=name, eligibility=eligibility, pods=mapped))
    if known is not None and len(known) > len(nodes) + 64:
        # removed nodes linger until a pass over every node: keep the live ones only
        live = {name: known[name] for name in nodes}
        known.clear()
        known.update(live)
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
