"""Placement preview (docs/rollout-control.md): what applying manifests would do to each node, computed
with the same code that decides, and without appending anything.

Why: Nomad users' complaints about ``job plan`` (filtered nodes shown as failures, only the first
failing constraint shown, no "why not on node X") are what a preview must avoid. So the answer is
grouped first (place / stop / replace / unchanged / ineligible, where ineligible nodes are simply not
targeted, never failures), then every node with *every* placement rule checked, and the control that
holds it back when one does.

How: the manifests are applied to a copy of the read model with the projection's own fold (nodes
first, then DaemonSets, as ``apply`` appends them), and each DaemonSet's nodes are judged as the
reconcile would judge them once the rollout has run its course: eligibility (``eligibility``), the
rollout controls (``rollout_control``), the revision of the pods already there. Pure: the input state
is not touched.
"""

from __future__ import annotations

import copy
from typing import Literal

import msgspec

from engine.core.budgets import ROLLING_UPDATE
from engine.core.eligibility import placement
from engine.core.manifests import DaemonSetManifest, Manifest, apply_daemonset
from engine.core.nodemap import NodeView, node_views
from engine.core.ownership import claim_pods
from engine.core.pods import is_deleting, is_updated
from engine.core.rollout_control import Hold, held_nodes
from events.ids import stable_id
from events.types import NodeRegistered
from projections.fold import apply_event
from projections.model import ClusterState, DaemonSetState

Action = Literal["place", "stop", "replace", "unchanged", "ineligible"]
ACTIONS: tuple[Action, ...] = ("place", "stop", "replace", "unchanged", "ineligible")


class NodePreview(msgspec.Struct, frozen=True):
    node: str
    action: Action
    #: every placement rule checked (``rule: ok|FAIL message``), then what else decides
    reasons: tuple[str, ...]


class Preview(msgspec.Struct, frozen=True):
    daemonset: str
    #: what ``apply`` would print for the object: created, configured or unchanged
    result: str
    counts: dict[str, int]
    nodes: tuple[NodePreview, ...]

    @property
    def changes(self) -> bool:
        return self.result != "unchanged" or any(self.counts[a] for a in ("place", "stop", "replace"))


def preview(state: ClusterState, manifests: list[Manifest], now: float) -> list[Preview]:
    """One ``Preview`` per DaemonSet in ``manifests``, over ``state`` with every manifest applied."""
    after = copy.deepcopy(state)
    seq = state.seq
    for manifest in manifests:
        if isinstance(manifest, NodeRegistered):
            seq += 1
            apply_event(after, manifest, seq, now)
    results: list[tuple[str, str]] = []
    for manifest in manifests:
        if isinstance(manifest, DaemonSetManifest):
            existing = after.daemonsets.get(manifest.key)
            uid = stable_id("preview", manifest.key, state.seq)
            outcome = apply_daemonset(manifest, existing, uid=uid)
            seq += 1
            apply_event(after, outcome.event, seq, now)
            results.append((manifest.key, outcome.result))
    return [_judge(after, key, result) for key, result in results]


def _judge(state: ClusterState, key: str, result: str) -> Preview:
    ds = state.daemonsets[key]
    claim = claim_pods(state, ds)
    views = node_views(state, placement(ds.spec.template), claim.pods)
    held = held_nodes(ds, views, state.nodes)
    nodes = tuple(_node(ds, view, held.get(view.name)) for view in views)
    counts: dict[str, int] = {a: sum(1 for n in nodes if n.action == a) for a in ACTIONS}
    return Preview(daemonset=key, result=result, counts=counts, nodes=nodes)


def _node(ds: DaemonSetState, view: NodeView, hold: Hold | None) -> NodePreview:
    e = view.eligibility
    rules = tuple(f"{c.rule}: {'ok' if c.passed else 'FAIL'} {c.message}" for c in e.checks)
    live = [p for p in view.pods if not is_deleting(p)]
    action: Action
    if not live:
        action = "place" if e.should_run else "ineligible"
        extra = "a pod of the new revision is created" if e.should_run else "not targeted"
    elif not e.should_continue_running:
        action, extra = "stop", f"pod {live[0].name} is deleted: {e.message}"
    elif not e.should_run:
        action, extra = "unchanged", f"pod {live[0].name} keeps running: {e.message} only blocks new pods"
    elif all(is_updated(p, ds) for p in live):
        action, extra = "unchanged", f"pod {live[0].name} already runs this revision"
    elif ds.spec.update_strategy.type != ROLLING_UPDATE:
        action, extra = "unchanged", f"OnDelete: pod {live[0].name} is replaced only once it is deleted"
    elif hold is not None:
        action, extra = "unchanged", f"pod {live[0].name} stays on its revision: {hold.message} [{hold.code}]"
    else:
        action, extra = "replace", f"pod {live[0].name} is replaced by the new revision (rolling update)"
    return NodePreview(node=view.name, action=action, reasons=(*rules, extra))
