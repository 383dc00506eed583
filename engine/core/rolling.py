"""Rolling update (docs/upstream-semantics.md A.9, upstream ``rollingUpdate``), run only when ``manage``
issued no command.

maxSurge 0: delete old pods (unavailable ones always, available ones within maxUnavailable) and let the
next ``manage`` create their replacements. maxSurge > 0: create new pods beside old ones (unavailable
old pods always, available ones within maxSurge), and delete an old pod once its new one is available.

Nodes a rollout control holds back (partition, pause, selector, the guard: docs/rollout-control.md)
still count towards the budgets but are not acted on; their reason names the control. Under those
controls (``held`` given, even empty) nodes are walked from the last name back, so the nodes a
partition keeps old are the smallest names, as OpenKruise orders them.

Departure: upstream walks nodes in Go map order, so *which* available old pods go first is unspecified;
here nodes are walked by name. Upstream also walks nodes that left the node list if pods remain there;
here only known nodes are walked (pods on removed nodes are gone with them, see ``nodemap``).
"""

from __future__ import annotations

from engine.core.budgets import budgets
from engine.core.nodemap import NodeView
from engine.core.plan import Note, Plan, PlannedCreate, PlannedDelete
from engine.core.pods import is_available, is_deleting, is_updated
from engine.core.rollout_control import Hold
from projections.model import DaemonSetState, PodState

REPLACE_UNAVAILABLE = "ReplaceUnavailableOldPod"
REPLACE_OLD = "RollingUpdate"
WAIT_BUDGET = "RollingUpdateBudget"
SURGE_CREATE = "SurgeCreate"
SURGE_REPLACED = "SurgePodReplaced"
NOT_SCHEDULABLE = "OldPodOnIneligibleNode"


def _new_and_old(ds: DaemonSetState, pods: list[PodState]) -> tuple[PodState | None, PodState | None, bool]:
    """``findUpdatedPodsOnNode``: at most one new and one old live pod, else ``ok`` is False."""
    new: PodState | None = None
    old: PodState | None = None
    for pod in pods:
        if is_deleting(pod):
            continue
        if is_updated(pod, ds):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def rolling_update(
    ds: DaemonSetState, views: list[NodeView], now: float, held: dict[str, Hold] | None = None
) -> Plan:
    relevant = [v for v in views if v.eligibility.should_run or v.pods]
    if held is not None:
        relevant.reverse()  # under rollout controls nodes are updated from the end of the name order
    desired = sum(1 for v in views if v.eligibility.should_run)
    max_surge, max_unavailable = budgets(ds.spec, desired)
    if max_surge == 0:
        return _without_surge(ds, relevant, max_unavailable, now, held or {})
    return _with_surge(ds, relevant, desired, max_surge, now, held or {})


def _hold(node: str, pod: PodState, hold: Hold) -> Note:
    return Note(node, "wait", hold.code, f"old pod {pod.name} stays: {hold.message}", pod.name)


def _without_surge(
    ds: DaemonSetState, views: list[NodeView], max_unavailable: int, now: float, held: dict[str, Hold]
) -> Plan:
    mrs = ds.spec.min_ready_seconds
    plan = Plan()
    unavailable = 0
    allowed: list[PlannedDelete] = []
    candidates: list[PlannedDelete] = []
    for view in views:
        new, old, ok = _new_and_old(ds, view.pods)
        if not ok or (old is None) == (new is None):
            unavailable += 1
            continue
        if new is not None:
            if not is_available(new, mrs, now):
                unavailable += 1
            continue
        assert old is not None
        if view.name in held:
            unavailable += not is_available(old, mrs, now)
            plan.notes.append(_hold(view.name, old, held[view.name]))
        elif not is_available(old, mrs, now):
            allowed.append(
                PlannedDelete(
                    view.name, old, REPLACE_UNAVAILABLE, f"old pod {old.name} is not available; replacing it"
                )
            )
            unavailable += 1
        elif unavailable >= max_unavailable:
            plan.notes.append(_waiting(view.name, old, max_unavailable))
        else:
            message = f"old pod {old.name} replaced within maxUnavailable {max_unavailable}"
            candidates.append(PlannedDelete(view.name, old, REPLACE_OLD, message))
    room = min(max(0, max_unavailable - unavailable), len(candidates))
    plan.deletes = allowed + candidates[:room]
    plan.notes.extend(_waiting(c.node, c.pod, max_unavailable) for c in candidates[room:])
    return plan


def _waiting(node: str, pod: PodState, max_unavailable: int) -> Note:
    message = f"old pod {pod.name} waits: maxUnavailable {max_unavailable} is used up"
    return Note(node, "wait", WAIT_BUDGET, message, pod.name)


def _with_surge(
    ds: DaemonSetState,
    views: list[NodeView],
    desired: int,
    max_surge: int,
    now: float,
    held: dict[str, Hold],
) -> Plan:
    mrs = ds.spec.min_ready_seconds
    plan = Plan()
    deletes: list[PlannedDelete] = []
    should_not_run: list[PlannedDelete] = []
    allowed: list[PlannedCreate] = []
    candidates: list[PlannedCreate] = []
    surged = 0
    available = 0
    for view in views:
        new, old, ok = _new_and_old(ds, view.pods)
        if not ok:
            surged += 1
            continue
        if old is not None:
            available += is_available(old, mrs, now)
        elif new is not None:
            available += is_available(new, mrs, now)
        if old is None:
            continue
        if new is None:
            if view.name in held and view.eligibility.should_run:
                plan.notes.append(_hold(view.name, old, held[view.name]))
            elif not is_available(old, mrs, now):
                if not view.eligibility.should_run:
                    message = f"old pod {old.name} is not available and the node is no longer eligible"
                    deletes.append(PlannedDelete(view.name, old, NOT_SCHEDULABLE, message))
                else:
                    message = f"old pod {old.name} is not available; creating its replacement now"
                    allowed.append(PlannedCreate(view.name, REPLACE_UNAVAILABLE, message))
            elif not view.eligibility.should_run:
                message = (
                    f"old pod {old.name} is on a node no longer eligible; deleted once others are available"
                )
                should_not_run.append(PlannedDelete(view.name, old, NOT_SCHEDULABLE, message))
            elif surged >= max_surge:
                plan.notes.append(Note(view.name, "wait", WAIT_BUDGET, _surge_wait(old, max_surge), old.name))
            else:
                message = f"surging: new pod created beside old pod {old.name} (maxSurge {max_surge})"
                candidates.append(PlannedCreate(view.name, SURGE_CREATE, message))
        elif not is_available(new, mrs, now):
            surged += 1
            message = f"new pod {new.name} is not available yet; old pod {old.name} stays"
            plan.notes.append(Note(view.name, "wait", "WaitingForNewPod", message, new.name))
        else:
            message = f"new pod {new.name} is available; the old pod goes"
            deletes.append(PlannedDelete(view.name, old, SURGE_REPLACED, message))
    deletable = min(max(0, available - desired), len(should_not_run))
    deletes.extend(should_not_run[:deletable])
    plan.notes.extend(
        Note(d.node, "wait", NOT_SCHEDULABLE, d.message, d.pod.name) for d in should_not_run[deletable:]
    )
    room = min(max(0, max_surge - surged), len(candidates))
    plan.creates = allowed + candidates[:room]
    plan.notes.extend(
        Note(c.node, "wait", WAIT_BUDGET, f"waits: maxSurge {max_surge} is used up")
        for c in candidates[room:]
    )
    plan.deletes = deletes
    return plan


def _surge_wait(pod: PodState, max_surge: int) -> str:
    return f"old pod {pod.name} waits: maxSurge {max_surge} is used up"
