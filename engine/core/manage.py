"""Per-node reconcile (docs/upstream-semantics.md A.5, upstream ``manage`` / ``podsShouldBeOnNode``), for
every node in name order.

- eligible and no pod: create one;
- may continue running: delete failed pods (with per-node backoff) and succeeded pods, then resolve
  extra pods: without surge keep only the oldest; with surge keep the oldest new and oldest old, and drop
  the old one once it is not Ready or the new one is available; a terminating pod blocks the
  replacement unless surge is allowed;
- may not continue running: delete every pod not already terminating.

Upstream also emits the Events ``FailedDaemonPod`` and ``SucceededDaemonPod``; here they are the reason
codes of those deletes, so they are counted from the decision log.
"""

from __future__ import annotations

from engine.core import backoff
from engine.core.nodemap import NodeView
from engine.core.plan import Note, Plan, PlannedCreate, PlannedDelete
from engine.core.pods import is_available, is_deleting, revision_of
from projections.model import DaemonSetState, PodState

FAILED_DAEMON_POD = "FailedDaemonPod"
SUCCEEDED_DAEMON_POD = "SucceededDaemonPod"
FAILED_POD_BACKOFF = "FailedPodBackoff"
DUPLICATE_POD = "DuplicatePod"
SURGE_RESOLVED = "SurgePodReplaced"
POD_TERMINATING = "PodTerminating"
MISSING_POD = "MissingPod"
RUNNING = "Running"
KEPT_NOT_SCHEDULABLE = "KeptDespiteNoSchedule"


def manage(ds: DaemonSetState, views: list[NodeView], surge: bool, now: float) -> Plan:
    plan = Plan()
    for view in views:
        _node(ds, view, surge, now, plan)
    return plan


def _node(ds: DaemonSetState, view: NodeView, surge: bool, now: float, plan: Plan) -> None:
    node, e, pods = view.name, view.eligibility, view.pods
    if len(pods) == 1 and e.should_continue_running:
        # the common case (one live pod where it may stay), decided as the general path below would,
        # without its lists: a full reconcile meets it on nearly every node of a fleet
        pod = pods[0]
        if pod.deletion_timestamp is None and pod.phase != "Failed" and pod.phase != "Succeeded":
            if e.should_run:
                plan.notes.append(Note(node, "keep", RUNNING, f"pod {pod.name} is {pod.phase}", pod.name))
            else:
                message = (
                    f"{e.message}: it only blocks new pods, so pod {pod.name} keeps running (misscheduled)"
                )
                plan.notes.append(Note(node, "keep", KEPT_NOT_SCHEDULABLE, message, pod.name))
            return
    if e.should_run and not pods:
        plan.creates.append(PlannedCreate(node, MISSING_POD, "node is eligible and has no daemon pod"))
        return
    if not e.should_continue_running:
        doomed = [p for p in pods if not is_deleting(p)]
        for pod in doomed:
            plan.deletes.append(
                PlannedDelete(node, pod, e.code, f"{e.message}: the pod may not keep running")
            )
        if not doomed:
            names = ", ".join(p.name for p in pods)
            message = f"{e.message}" + (f" (pods terminating: {names})" if pods else "")
            plan.notes.append(Note(node, "skip", e.code, message))
        return
    before = len(plan.deletes) + len(plan.creates)
    noted = len(plan.notes)
    running = _prune_terminal(ds, view, now, plan)
    terminating = [p for p in pods if is_deleting(p)]
    if not surge:
        if len(running) > 1:
            keep = running[0]
            for pod in running[1:]:
                message = f"more than one daemon pod on the node; keeping the oldest, {keep.name}"
                plan.deletes.append(PlannedDelete(node, pod, DUPLICATE_POD, message))
    elif len(running) <= 1:
        if not running and e.should_run:
            message = "node is eligible and has no running pod (surge: may start beside a terminating one)"
            plan.creates.append(PlannedCreate(node, MISSING_POD, message))
    else:
        _resolve_surge(ds, node, running, now, plan)
    if len(plan.deletes) + len(plan.creates) > before:
        return
    if running:
        pod = running[0]
        if e.should_run:
            plan.notes.append(Note(node, "keep", RUNNING, f"pod {pod.name} is {pod.phase}", pod.name))
        else:
            message = f"{e.message}: it only blocks new pods, so pod {pod.name} keeps running (misscheduled)"
            plan.notes.append(Note(node, "keep", KEPT_NOT_SCHEDULABLE, message, pod.name))
    elif terminating and e.should_run:
        gone = terminating[0]
        message = f"pod {gone.name} is terminating; the replacement is created once it is gone"
        plan.notes.append(Note(node, "wait", POD_TERMINATING, message, gone.name))
    elif len(plan.notes) == noted:
        plan.notes.append(Note(node, "skip", e.code, e.message))


def _prune_terminal(ds: DaemonSetState, view: NodeView, now: float, plan: Plan) -> list[PodState]:
    running: list[PodState] = []
    for pod in view.pods:
        if is_deleting(pod):
            continue
        if pod.phase == "Failed":
            entry = ds.backoffs.get(view.name)
            if (left := backoff.remaining(entry, ds.generation, now)) is not None:
                message = f"failed pod {pod.name} is kept for {left:g}s more (failed-pod backoff)"
                plan.notes.append(Note(view.name, "wait", FAILED_POD_BACKOFF, message, pod.name))
                plan.requeue(left)
                continue
            step = plan.backoffs.get(view.name) or backoff.advance(entry, ds.generation, now)
            plan.backoffs[view.name] = step
            message = (
                f"found failed daemon pod {pod.namespace}/{pod.name} on node {view.name}, "
                f"will try to kill it; next failure waits {step.delay_seconds:g}s"
            )
            plan.deletes.append(PlannedDelete(view.name, pod, FAILED_DAEMON_POD, message))
        elif pod.phase == "Succeeded":
            message = f"found succeeded daemon pod {pod.key} on node {view.name}, will try to delete it"
            plan.deletes.append(PlannedDelete(view.name, pod, SUCCEEDED_DAEMON_POD, message))
        else:
            running.append(pod)
    return running


def _resolve_surge(ds: DaemonSetState, node: str, running: list[PodState], now: float, plan: Plan) -> None:
    oldest_new: PodState | None = None
    oldest_old: PodState | None = None
    for pod in running:
        if revision_of(pod) == ds.template_hash:
            if oldest_new is None:
                oldest_new = pod
                continue
        elif oldest_old is None:
            oldest_old = pod
            continue
        message = (
            "more than one daemon pod of the same kind (new/old) on the node; keeping the oldest of each"
        )
        plan.deletes.append(PlannedDelete(node, pod, DUPLICATE_POD, message))
    if oldest_new is None or oldest_old is None:
        return
    if not oldest_old.ready:
        message = f"old pod is not Ready; new pod {oldest_new.name} replaces it"
        plan.deletes.append(PlannedDelete(node, oldest_old, SURGE_RESOLVED, message))
    elif is_available(oldest_new, ds.spec.min_ready_seconds, now):
        message = f"new pod {oldest_new.name} is available; the old pod goes"
        plan.deletes.append(PlannedDelete(node, oldest_old, SURGE_RESOLVED, message))
