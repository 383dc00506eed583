"""The availability guard (docs/rollout-control.md): a rollout that keeps producing pods that fail or
never become Ready stops itself, and with ``autoRevert`` goes back to the last revision that was fully
available.

Why in the core: whether the guard has tripped is a fact about the read model and ``now`` (pods of the
current revision, their phase, readiness and age, the failed-pod backoffs of this generation), so
every decision that acts on it is recomputable by ``replay verify``. The verdict is kept in the
DaemonSet's status as a condition naming the revision it is about: once tripped it stays tripped for
that revision even after the bad pods are gone (replaced, or rolled back), until a new template is
applied. ``RolloutComplete`` remembers the last revision that was fully rolled out and available, the
one auto-revert goes back to.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec

from engine.core.nodemap import NodeView
from engine.core.pods import is_available, is_deleting, is_updated, revision_of
from engine.core.rollout_control import HELD_BY_GUARD, Hold
from engine.core.scaling import BadIntOrPercent, scaled_value
from events.types import DaemonSetCondition, DaemonSetStatus
from projections.model import DaemonSetState

GUARD_CONDITION = "RolloutGuard"
COMPLETE_CONDITION = "RolloutComplete"
TRIPPED = "FailureThresholdReached"
REVERTED = "AutoReverted"
GUARD_TRIPPED = "RolloutGuardTripped"


class Verdict(msgspec.Struct, frozen=True):
    """The guard's reading of one DaemonSet at ``now``."""

    tripped: bool
    #: (node, why) for each node whose new-revision pod counts against the threshold
    bad: tuple[tuple[str, str], ...]
    threshold: int
    message: str
    #: the revision auto-revert rolls the fleet to, or empty
    revert_to: str = ""
    #: when a not-Ready new pod will pass the progress deadline (the reconcile must look again then)
    requeue_after: float | None = None
    since: datetime | None = None
    #: the revision every desired node runs, available, if there is one (a rollout about to start:
    #: the previous revision was complete even if no decision recorded it so)
    whole: str = ""

    @property
    def hold(self) -> Hold:
        return Hold(HELD_BY_GUARD, f"the availability guard stopped the rollout: {self.message}")


def guarded(ds: DaemonSetState) -> bool:
    return ds.spec.progress_deadline_seconds is not None or ds.spec.rollout_guard is not None


def condition(status: DaemonSetStatus, kind: str) -> DaemonSetCondition | None:
    return next((c for c in status.conditions if c.type == kind), None)


def threshold(ds: DaemonSetState, desired: int) -> int:
    guard = ds.spec.rollout_guard
    value = guard.failure_threshold if guard is not None else 1
    try:
        return max(1, scaled_value(value, desired))
    except BadIntOrPercent:
        return 1


def _bad_pods(
    ds: DaemonSetState, views: list[NodeView], now: float
) -> tuple[list[tuple[str, str]], float | None]:
    deadline = ds.spec.progress_deadline_seconds
    bad: list[tuple[str, str]] = []
    soonest: float | None = None
    for view in views:
        if not view.eligibility.should_run:
            continue
        found = ""
        has_old = False
        for pod in view.pods:
            if is_deleting(pod):
                continue
            if not is_updated(pod, ds):
                has_old = True
                continue
            if pod.phase == "Failed":
                found = found or f"new pod {pod.name} failed"
            elif deadline is not None and not pod.ready:
                age = now - pod.created_at
                if age > deadline:
                    found = found or f"new pod {pod.name} not Ready {math.floor(age)}s after it was created"
                else:
                    wait = deadline - age + 1.0
                    soonest = wait if soonest is None else min(soonest, wait)
        backoff = ds.backoffs.get(view.name)
        if not found and not has_old and backoff is not None and backoff.generation == ds.generation:
            found = f"a new-revision pod failed here (next retry after {backoff.delay_seconds:g}s)"
        if found:
            bad.append((view.name, found))
    return bad, soonest


def verdict(ds: DaemonSetState, views: list[NodeView], now: float) -> Verdict | None:
    """None for a DaemonSet without a guard. A guard tripped earlier for the current revision stays
    tripped with its first message; otherwise it trips once ``threshold`` nodes have a bad new pod."""
    if not guarded(ds):
        return None
    desired = sum(1 for v in views if v.eligibility.should_run)
    limit = threshold(ds, desired)
    whole = _whole(ds, views, now)
    bad, soonest = _bad_pods(ds, views, now)
    earlier = condition(ds.status, GUARD_CONDITION)
    revert = ds.spec.rollout_guard is not None and ds.spec.rollout_guard.auto_revert
    if earlier is not None and earlier.status == "True" and earlier.revision == ds.template_hash:
        target = _revert_target(ds) if revert else ""
        message = earlier.message.split(" (auto-revert", 1)[0]
        since = earlier.last_transition_time
        return Verdict(True, tuple(bad), limit, message, target, None, since, whole)
    if len(bad) < limit:
        return Verdict(False, tuple(bad), limit, "", requeue_after=soonest, whole=whole)
    deadline = ds.spec.progress_deadline_seconds
    within = f" within progressDeadlineSeconds {deadline}" if deadline is not None else ""
    listed = "; ".join(f"{node}: {why}" for node, why in bad[:5]) + ("; ..." if len(bad) > 5 else "")
    message = (
        f"{len(bad)} node(s) with a new-revision pod failed or not Ready{within} "
        f"(failureThreshold {limit}): {listed}"
    )
    return Verdict(True, tuple(bad), limit, message, _revert_target(ds) if revert else "", whole=whole)


def _whole(ds: DaemonSetState, views: list[NodeView], now: float) -> str:
    found = ""
    for view in views:
        if not view.eligibility.should_run:
            continue
        live = [p for p in view.pods if not is_deleting(p)]
        if len(live) != 1 or not is_available(live[0], ds.spec.min_ready_seconds, now):
            return ""
        revision = revision_of(live[0])
        if not revision or (found and revision != found):
            return ""
        found = revision
    return found


def _revert_target(ds: DaemonSetState) -> str:
    complete = condition(ds.status, COMPLETE_CONDITION)
    target = complete.revision if complete is not None else ""
    return target if target and target != ds.template_hash and target in ds.revisions else ""


def reverted(ds: DaemonSetState, target: str) -> DaemonSetState:
    """The DaemonSet as the reconcile acts on it while auto-revert holds: the target revision's
    template in place of the current one (the spec as applied is unchanged in the read model)."""
    rev = ds.revisions[target]
    spec = msgspec.structs.replace(ds.spec, template=rev.template)
    return msgspec.structs.replace(
        ds, spec=spec, template_hash=target, template_generation=rev.template_generation
    )


def with_conditions(
    ds: DaemonSetState, status: DaemonSetStatus, found: Verdict | None, now: float
) -> DaemonSetStatus:
    """``status`` with the guard's conditions: ``RolloutGuard`` (True while tripped, for the current
    revision) and ``RolloutComplete`` (True once the revision acted on is everywhere and available;
    while False it still names the last revision that was). Transition times change only with the
    condition's status, so an unchanged verdict records no new decision."""
    if found is None:
        return status
    at = datetime.fromtimestamp(now, tz=UTC)
    previous = {c.type: c for c in ds.status.conditions}
    acted_on = found.revert_to or ds.template_hash
    desired = status.desired_number_scheduled
    complete = (
        status.updated_number_scheduled >= desired and status.number_available >= desired and desired > 0
    )
    last = previous.get(COMPLETE_CONDITION)
    if complete:
        done = DaemonSetCondition(type=COMPLETE_CONDITION, status="True", revision=acted_on)
    else:
        known = found.whole or (last.revision if last is not None else "")
        done = DaemonSetCondition(type=COMPLETE_CONDITION, status="False", revision=known)
    conditions = [_since(done, last, at)]
    if found.tripped:
        reason, message = TRIPPED, found.message
        if found.revert_to:
            number = ds.revisions[found.revert_to].number
            reason = REVERTED
            message += f" (auto-revert: back to revision {number}, {found.revert_to})"
        guard = DaemonSetCondition(
            type=GUARD_CONDITION, status="True", reason=reason, message=message, revision=ds.template_hash
        )
        conditions.append(_since(guard, previous.get(GUARD_CONDITION), at))
    return msgspec.structs.replace(status, conditions=tuple(conditions))


def _since(new: DaemonSetCondition, old: DaemonSetCondition | None, at: datetime) -> DaemonSetCondition:
    same = old is not None and old.status == new.status and old.reason == new.reason
    when = old.last_transition_time if same and old is not None else at
    return msgspec.structs.replace(new, last_transition_time=when)
