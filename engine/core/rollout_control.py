"""Rollout controls beyond upstream (docs/rollout-control.md): which nodes the rolling update may
move to the current revision, and why the others are held back.

Upstream's DaemonSet rolls every node or none. Partition, pause and a node selector (OpenKruise's
Advanced DaemonSet fields) let an operator roll a canary, widen it and stop it. They only narrow the
*rolling-update step*: ``manage`` still creates pods on nodes that have none (a node joining mid-rollout
gets the current revision, as upstream) and still replaces failed pods. A failed old pod on a node that
is held back is replaced at its own revision, so a held node stays on the revision the operator kept.

Pure: a function of the DaemonSet, the node views and the guard's verdict (``engine.core.guard``).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from engine.core import selectors
from engine.core.budgets import ROLLING_UPDATE
from engine.core.nodemap import NodeView
from engine.core.pods import is_deleting, is_updated, revision_of
from engine.core.scaling import BadIntOrPercent, scaled_value
from events.k8s import DaemonSetSpec, LabelSelector
from projections.model import DaemonSetState, NodeState

HELD_BY_PARTITION = "HeldByPartition"
HELD_BY_PAUSE = "RolloutPaused"
HELD_BY_SELECTOR = "HeldBySelector"
HELD_BY_GUARD = "HeldByGuard"
REPLACE_HELD_FAILED = "ReplaceFailedPodAtItsRevision"


class Hold(msgspec.Struct, frozen=True):
    """Why the rolling update leaves one node on its old revision."""

    code: str
    message: str


def partition_count(spec: DaemonSetSpec, desired: int) -> int:
    """How many nodes ``rollingUpdate.partition`` keeps on the old revision: an int, or a percent of
    desiredNumberScheduled rounded *down* (the budgets round up; a partition errs towards updating)."""
    ru = spec.update_strategy.rolling_update
    if ru is None or ru.partition is None:
        return 0
    try:
        return max(0, scaled_value(ru.partition, desired, round_up=False))
    except BadIntOrPercent:
        return 0


def is_paused(spec: DaemonSetSpec) -> bool:
    ru = spec.update_strategy.rolling_update
    return ru is not None and ru.paused


def rollout_selector(spec: DaemonSetSpec) -> LabelSelector | None:
    ru = spec.update_strategy.rolling_update
    return ru.selector if ru is not None else None


def has_controls(spec: DaemonSetSpec) -> bool:
    """Any control that can hold a node back (the guard included)."""
    ru = spec.update_strategy.rolling_update
    controlled = ru is not None and (ru.partition is not None or ru.paused or ru.selector is not None)
    return controlled or spec.progress_deadline_seconds is not None or spec.rollout_guard is not None


def _has_live_old(ds: DaemonSetState, view: NodeView) -> bool:
    return any(not is_deleting(p) and not is_updated(p, ds) for p in view.pods)


def _has_live_new(ds: DaemonSetState, view: NodeView) -> bool:
    return any(not is_deleting(p) and is_updated(p, ds) for p in view.pods)


def held_nodes(
    ds: DaemonSetState, views: list[NodeView], nodes: Mapping[str, NodeState], guard: Hold | None = None
) -> dict[str, Hold]:
    """Nodes with an old pod (and no new one) that the rolling update must leave alone, with why.

    Every node that should run the pod and is not waiting on an old pod takes one of the
    ``desired - partition`` update slots: nodes already updated, nodes whose old pod is already gone or
    terminating, and nodes that joined with no pod (they get the current revision). The remaining
    slots go to nodes still on an old revision, by name from the end, so the smallest names stay old.
    A selector makes only matching nodes eligible for a slot (partition still counts every node);
    pause and a tripped guard hold every node still on an old revision. Nothing here downgrades an
    updated node: such a node is never held, whatever the partition says now.
    """
    spec = ds.spec
    if spec.update_strategy.type != ROLLING_UPDATE or not has_controls(spec):
        return {}
    desired = [v for v in views if v.eligibility.should_run]
    partition = partition_count(spec, len(desired))
    old = [v for v in desired if _has_live_old(ds, v) and not _has_live_new(ds, v)]
    room = max(0, len(desired) - partition - (len(desired) - len(old)))
    selector = rollout_selector(spec)
    selects = selectors.matcher(selector) if selector is not None else None
    held: dict[str, Hold] = {}
    for view in sorted(old, key=lambda v: v.name, reverse=True):
        if is_paused(spec):
            message = "rollout is paused (rollingUpdate.paused): the node keeps its revision"
            held[view.name] = Hold(HELD_BY_PAUSE, message)
        elif guard is not None:
            held[view.name] = guard
        elif selects is not None and not selects(_labels(nodes, view.name)):
            message = (
                f"node does not match rollingUpdate.selector {selectors.describe(selector)}: "
                "it keeps its revision"
            )
            held[view.name] = Hold(HELD_BY_SELECTOR, message)
        elif room > 0:
            room -= 1
        else:
            message = (
                f"rollingUpdate.partition keeps {partition} of {len(desired)} nodes on the old revision "
                "(nodes with the smallest names stay old)"
            )
            held[view.name] = Hold(HELD_BY_PARTITION, message)
    return held


def held_revision(ds: DaemonSetState, view: NodeView) -> str:
    """The revision a held node is on: its oldest live old pod's, or a failed one's (the pod a
    replacement stands in for), if the DaemonSet still knows that revision's template."""
    for pod in view.pods:
        if not is_updated(pod, ds):
            revision = revision_of(pod)
            if revision and revision in ds.revisions:
                return revision
    return ""


def _labels(nodes: Mapping[str, NodeState], name: str) -> dict[str, str]:
    node = nodes.get(name)
    return node.labels if node is not None else {}
