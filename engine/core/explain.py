"""``dsctl explain node X --ds NS/NAME``: why a DaemonSet does (or does not) run a pod on one node.

Everything here is recomputed from the state and ``now``: the node's eligibility with every rule
checked, the DaemonSet's pods on that node, and the reasons the reconcile gives for it at this moment
(also when it would record no decision because nothing changed).
"""

from __future__ import annotations

import msgspec

from engine.core.eligibility import Eligibility, evaluate, placement
from engine.core.reconcile import reconcile
from events.errors import NotFound
from events.types import NodeReason
from projections.model import ClusterState, PodState


class NodeExplanation(msgspec.Struct, frozen=True):
    node: str
    daemonset: str
    eligibility: Eligibility
    pods: tuple[PodState, ...]
    reasons: tuple[NodeReason, ...]


def explain_node(state: ClusterState, key: str, node: str, now: float) -> NodeExplanation:
    ds = state.daemonsets.get(key)
    if ds is None:
        raise NotFound(f"daemonset {key} not found")
    found = state.nodes.get(node)
    if found is None:
        raise NotFound(f"node {node} not found")
    owned = state.pods_by_owner.get(ds.uid, set())
    pods = tuple(state.pods[k] for k in sorted(state.pods_by_node.get(node, ())) if k in owned)
    result = reconcile(state, key, now)
    reasons = tuple(r for r in result.reasons if r.node == node)
    return NodeExplanation(
        node=node,
        daemonset=key,
        eligibility=evaluate(placement(ds.spec.template), found),
        pods=pods,
        reasons=reasons,
    )
