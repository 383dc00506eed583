"""Rollout progress that names its blockers (docs/rollout-control.md): which nodes hold the
unavailability or surge budget and why, and whether a control (pause, partition, selector) or the
availability guard stopped the rollout short of every node.

Why apart from ``status``: the status counts, as upstream's does; a person waiting on a rollout needs
the nodes behind the counts ("node-3: pod never Ready, created 75s ago"), which is what upstream's
users ask for (kubernetes #139226, #117204). Pure: recomputed from the state and ``now`` with the
same functions the reconcile uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import msgspec

from engine.core import guard, selectors
from engine.core.backoff import INITIAL_DELAY
from engine.core.budgets import ROLLING_UPDATE, budgets
from engine.core.eligibility import placement
from engine.core.nodemap import NodeView, node_views
from engine.core.ownership import claim_pods
from engine.core.pods import is_available, is_deleting, is_updated
from engine.core.rollout_control import (
    Hold,
    held_nodes,
    is_paused,
    partition_count,
    rollout_selector,
)
from events.errors import NotFound
from events.types import DaemonSetCondition, DaemonSetStatus
from projections.model import ClusterState, DaemonSetState, PodState

Phase = Literal["complete", "progressing", "stopped", "guarded"]


class Blocker(msgspec.Struct, frozen=True):
    node: str
    #: the budget the node holds: maxUnavailable or maxSurge
    budget: str
    why: str
    pod: str = ""


class Progress(msgspec.Struct, frozen=True):
    phase: Phase
    desired: int
    updated: int
    #: the controls in force, for a person ("paused", "partition 2 (2 of 5 nodes kept old)", ...)
    controls: tuple[str, ...]
    #: (node, code) of every node a control or the guard holds on its old revision
    held: tuple[tuple[str, str], ...]
    blockers: tuple[Blocker, ...]
    guard: str = ""


def _age(seconds: float) -> str:
    return f"{math.floor(max(0.0, seconds))}s"


def _blocker(ds: DaemonSetState, view: NodeView, surge: bool, now: float, stable: bool) -> Blocker | None:
    live = [p for p in view.pods if not is_deleting(p)]
    gone = [p for p in view.pods if is_deleting(p)]
    mrs = ds.spec.min_ready_seconds
    if not live:
        if gone:
            pod = gone[0]
            since = pod.deletion_timestamp or now
            when = "" if stable else f" for {_age(now - since)}"
            why = f"pod {pod.name} terminating{when}; its replacement waits"
            return Blocker(view.name, "maxUnavailable", why, pod.name)
        return Blocker(view.name, "maxUnavailable", "no pod yet")
    new = [p for p in live if is_updated(p, ds)]
    old = [p for p in live if not is_updated(p, ds)]
    if surge and new and old and not is_available(new[0], mrs, now):
        return Blocker(view.name, "maxSurge", _why(ds, new[0], now, stable), new[0].name)
    first = live[0]
    if is_available(first, mrs, now):
        return None
    return Blocker(view.name, "maxUnavailable", _why(ds, first, now, stable), first.name)


def _instant(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failures(delay: float) -> int:
    """How many failures a failed-pod backoff delay stands for (it doubles from the initial delay)."""
    return max(1, round(math.log2(max(delay, INITIAL_DELAY) / INITIAL_DELAY)) + 1)


def _why(ds: DaemonSetState, pod: PodState, now: float, stable: bool = False) -> str:
    which = "new" if is_updated(pod, ds) else "old"
    if pod.phase == "Failed":
        backoff = ds.backoffs.get(pod.node)
        extra = ""
        if backoff is not None and backoff.generation == ds.generation:
            times = _failures(backoff.delay_seconds)
            extra = (
                f" ({times} time{'s' if times > 1 else ''} on this node; backoff {backoff.delay_seconds:g}s)"
            )
        return f"{which} pod {pod.name} failed{extra}"
    if pod.ready and pod.ready_since is not None:
        when = f"since {_instant(pod.ready_since)}" if stable else f"for {_age(now - pod.ready_since)}"
        mrs = ds.spec.min_ready_seconds
        return f"{which} pod {pod.name} Ready {when}, not yet available (minReadySeconds {mrs})"
    if stable:  # no phase, no time: a status must not change while only the pod's age does
        return f"{which} pod {pod.name} not Ready"
    return f"{which} pod {pod.name} not Ready ({pod.phase}) {_age(now - pod.created_at)} after it was created"


def controls(ds: DaemonSetState, desired: int) -> tuple[str, ...]:
    """The rollout controls in force, for a person (``rollout status``, ``describe``)."""
    out = []
    if is_paused(ds.spec):
        out.append("paused (rollingUpdate.paused)")
    ru = ds.spec.update_strategy.rolling_update
    if ru is not None and ru.partition is not None:
        kept = partition_count(ds.spec, desired)
        out.append(
            f"partition {ru.partition} ({min(kept, desired)} of {desired} nodes kept on the old revision)"
        )
    selector = rollout_selector(ds.spec)
    if selector is not None:
        out.append(f"selector {selectors.describe(selector)} (only matching nodes are updated)")
    if guard.guarded(ds):
        out.append("guarded (progressDeadlineSeconds / rolloutGuard)")
    return tuple(out)


def rollout_progress(state: ClusterState, key: str, now: float, *, stable: bool = False) -> Progress:
    ds = state.daemonsets.get(key)
    if ds is None:
        raise NotFound(f"daemonset {key} not found")
    claim = claim_pods(state, ds)
    views = node_views(state, placement(ds.spec.template), claim.pods)
    found = guard.verdict(ds, views, now)
    acting = guard.reverted(ds, found.revert_to) if found is not None and found.revert_to else ds
    if acting is not ds:
        views = node_views(state, placement(acting.spec.template), claim.pods)
    stopped = found.hold if found is not None and found.tripped and not found.revert_to else None
    held = held_nodes(acting, views, state.nodes, stopped) if acting is ds else {}
    return assess(ds, acting, views, held, found, now, stable=stable)


def assess(
    ds: DaemonSetState,
    acting: DaemonSetState,
    views: list[NodeView],
    held: Mapping[str, Hold],
    found: guard.Verdict | None,
    now: float,
    *,
    stable: bool = False,
) -> Progress:
    """The progress of ``ds``'s rollout, ``acting`` being the DaemonSet the reconcile acts on (the
    reverted one under auto-revert). ``stable``: reasons without ages or phases (a Ready pod's
    instant is kept), so a status condition built from them changes only with the facts that count."""
    desired_views = [v for v in views if v.eligibility.should_run]
    desired = len(desired_views)
    surge, _ = budgets(ds.spec, desired)
    found_blockers = (
        _blocker(acting, v, surge > 0, now, stable) for v in desired_views if v.name not in held
    )
    blockers = tuple(b for b in found_blockers if b is not None)
    updated = sum(
        1 for v in desired_views if any(is_updated(p, acting) and not is_deleting(p) for p in v.pods)
    )
    tripped = found is not None and found.tripped
    phase: Phase
    if tripped:
        phase = "guarded"
    elif ds.spec.update_strategy.type != ROLLING_UPDATE:
        phase = "progressing"
    elif held and not blockers and updated + len(held) >= desired:
        phase = "stopped"
    elif not held and not blockers and updated >= desired:
        phase = "complete"
    else:
        phase = "progressing"
    return Progress(
        phase=phase,
        desired=desired,
        updated=updated,
        controls=controls(ds, desired),
        held=tuple((n, h.code) for n, h in sorted(held.items())),
        blockers=blockers,
        guard=found.message if found is not None and tripped else "",
    )


PROGRESSING = "Progressing"
#: blocking nodes a condition names (the rest are counted)
CONDITION_NODES = 5


def with_progress_condition(
    ds: DaemonSetState, status: DaemonSetStatus, progress: Progress, now: float
) -> DaemonSetStatus:
    """``status`` plus a ``Progressing`` condition for a DaemonSet under rollout controls
    (docs/rollout-control.md): True while rolling (naming the nodes that hold a budget and why) or
    once complete; False when a control or the guard stopped it, naming the control and the nodes it
    holds. Built from ``assess(..., stable=True)``: it changes only when the facts do."""
    if progress.phase == "complete":
        cond = DaemonSetCondition(type=PROGRESSING, status="True", reason="RolloutComplete")
    elif progress.phase == "guarded":
        cond = DaemonSetCondition(
            type=PROGRESSING, status="False", reason="GuardTripped", message=progress.guard
        )
    elif progress.phase == "stopped":
        codes = sorted({c for _, c in progress.held})
        names = [n for n, _ in progress.held]
        shown = ", ".join(names[:CONDITION_NODES]) + (", ..." if len(names) > CONDITION_NODES else "")
        message = f"{len(names)} node(s) kept on their revision by {', '.join(codes)}: {shown}"
        cond = DaemonSetCondition(type=PROGRESSING, status="False", reason=codes[0], message=message)
    else:
        listed = "; ".join(f"{b.node} holds {b.budget}: {b.why}" for b in progress.blockers[:CONDITION_NODES])
        more = len(progress.blockers) - CONDITION_NODES
        message = listed + (f"; and {more} more" if more > 0 else "")
        if progress.held:
            message += f" ({len(progress.held)} node(s) held by {', '.join(progress.controls)})"
        cond = DaemonSetCondition(type=PROGRESSING, status="True", reason="RollingUpdate", message=message)
    kept = next((c for c in ds.status.conditions if c.type == PROGRESSING), None)
    if kept is not None and (kept.status, kept.reason) == (cond.status, cond.reason):
        cond = msgspec.structs.replace(cond, last_transition_time=kept.last_transition_time)
    else:
        cond = msgspec.structs.replace(cond, last_transition_time=datetime.fromtimestamp(now, tz=UTC))
    others = tuple(c for c in status.conditions if c.type != PROGRESSING)
    return msgspec.structs.replace(status, conditions=(cond, *others))
