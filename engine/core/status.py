"""DaemonSet status (docs/upstream-semantics.md A.11, upstream ``updateDaemonSetStatus``) and kubectl's
"rollout complete".

Counted per node in the node list from the node's daemon pods (failed and non-terminal terminating
pods included), the node's *first* pod in upstream order deciding ready/available/updated. As in
upstream's unit tests, where the fake pod control writes to the cache at once, the counts include the
pods this very decision creates (and, here, creates still in flight): a status must not dip while the
executors catch up, or every pod report would record a new decision. Such a pod is Pending and not
Ready; it counts as updated only if its command was issued after the DaemonSet's last apply (the
read model's in-flight entry does not record the revision it was created for).
"""

from __future__ import annotations

from engine.core.budgets import ROLLING_UPDATE
from engine.core.nodemap import NodeView
from engine.core.pods import is_available, is_deleting, is_updated, seconds_until_available
from events.types import DaemonSetStatus
from projections.model import DaemonSetState


def compute_status(
    ds: DaemonSetState, views: list[NodeView], now: float, observed_generation: int
) -> DaemonSetStatus:
    desired = current = misscheduled = ready = available = updated = 0
    for view in views:
        scheduled = bool(view.pods)
        if not view.eligibility.should_run:
            misscheduled += scheduled
            continue
        desired += 1
        if not scheduled:
            continue
        current += 1
        first = view.pods[0]
        if first.ready:
            ready += 1
            available += is_available(first, ds.spec.min_ready_seconds, now)
        updated += is_updated(first, ds)
    return DaemonSetStatus(
        desired_number_scheduled=desired,
        current_number_scheduled=current,
        number_misscheduled=misscheduled,
        number_ready=ready,
        number_available=available,
        updated_number_scheduled=updated,
        number_unavailable=desired - available,
        observed_generation=observed_generation,
        collision_count=ds.collision_count,
    )


def availability_timer(ds: DaemonSetState, views: list[NodeView], now: float) -> float | None:
    """Seconds until some Ready pod passes minReadySeconds (then status and surge decisions change)."""
    if ds.spec.min_ready_seconds == 0:
        return None  # every Ready pod is available at once: no pod to wait for (a fleet-wide pass saved)
    waits = [
        w
        for view in views
        for pod in view.pods
        if not is_deleting(pod)
        and (w := seconds_until_available(pod, ds.spec.min_ready_seconds, now)) is not None
    ]
    return min(waits, default=None)


def rollout_complete(ds: DaemonSetState, status: DaemonSetStatus) -> bool:
    """``kubectl rollout status`` success: RollingUpdate only (OnDelete never reports complete), the
    current generation observed, and every desired node updated and available."""
    if ds.spec.update_strategy.type != ROLLING_UPDATE:
        return False
    desired = status.desired_number_scheduled
    return (
        status.observed_generation >= ds.generation
        and status.updated_number_scheduled >= desired
        and status.number_available >= desired
    )
