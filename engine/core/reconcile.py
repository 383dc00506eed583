"""``reconcile(state, key, now)``: what must happen next for one DaemonSet, and why, per node.

Pure: the same state and ``now`` always give the same result, ids included (they derive from the
DaemonSet uid, the node or pod, the state's sequence and the command kind). The order is upstream's
``syncDaemonSet`` (docs/upstream-semantics.md A.8):

1. A DaemonSet being deleted (foreground) or already gone (background, kept in ``state.deleted`` until its
   pods are gone): its pods are deleted, nothing else. Upstream leaves this to the garbage collector
   and does not even update status; the engine has no separate GC, so the reconciler plays it.
   Orphan deletion needs nothing here (the fold strips the owners).
2. Empty selector: never synced (upstream's ``SelectingAll`` warning), recorded once per apply.
3. Pods are claimed (adopted / released, docs/upstream-semantics.md A.7) whatever else happens, as upstream
   claims during status.
4. Commands in flight (unexpired): status only, ``observedGeneration`` not bumped.
5. Otherwise ``manage``; if it issued no command, the rolling update (RollingUpdate strategy only);
   creates and deletes each capped at ``BURST_REPLICAS``; status with ``observedGeneration = generation``.
   The rollout controls (docs/rollout-control.md) hold nodes back from the rolling update, and a
   failed old pod on a held node is replaced at its own revision.

The result's ``decision`` is None when nothing would change: no command, no adoption or release, no
backoff started, and the status equal to the one the state records. ``requeue_after`` is the earliest of
a failed-pod backoff ending, a Ready pod passing minReadySeconds, and a command in flight timing out.

Departures: slow-start batching (1, 2, 4, ... creates) is the executor's concern, since the decision
issues all its creates at once; the burst cap of 250 is kept here. Status counts the pods the decision
creates (see ``status``). Upstream's ControllerRevision objects, collisions and ``cleanupHistory`` have no
counterpart: revisions live in the read model (``revisions``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from engine.core import expectations, guard, progress, selectors
from engine.core.budgets import ROLLING_UPDATE, allows_surge
from engine.core.decision import (
    SUMMARY_THRESHOLD,
    ReconcileResult,
    assign_pod_names,
    compact_reasons,
    finish,
)
from engine.core.eligibility import evaluate, placement
from engine.core.manage import FAILED_DAEMON_POD, manage
from engine.core.nodemap import EligibilityMemo, NodeView, node_views, virtual_pod, with_extra_pods
from engine.core.ownership import claim_pods
from engine.core.plan import Note, Plan, PlannedCreate, PlannedDelete
from engine.core.pods import is_updated, revision_of, sort_key
from engine.core.rolling import rolling_update
from engine.core.rollout_control import REPLACE_HELD_FAILED, Hold, has_controls, held_nodes
from engine.core.status import availability_timer, compute_status
from events.types import (
    DaemonSetStatus,
    DecisionRecorded,
    NodeReason,
)
from projections.model import ClusterState, DaemonSetState, object_key

# re-exported: callers read the result type and the record's rules from here
__all__ = [
    "SUMMARY_THRESHOLD",
    "ReconcileResult",
    "assign_pod_names",
    "compact_reasons",
    "reconcile",
    "reconcile_nodes",
]

#: upstream ``BurstReplicas``: most creates, and most deletes, one reconcile issues
BURST_REPLICAS = 250
SELECTING_ALL = "SelectingAll"
COMMAND_IN_FLIGHT = "CommandInFlight"
BURST_LIMIT = "BurstLimit"
CASCADE_DELETE = "CascadeDelete"


def reconcile(
    state: ClusterState, key: str, now: float, memo: EligibilityMemo | None = None
) -> ReconcileResult:
    """Decide for one DaemonSet from ``state`` at ``now``. ``memo`` only caches eligibility results
    (see ``EligibilityMemo``): the decision is the same with or without it."""
    ds = state.daemonsets.get(key)
    gone = sorted((d for d in state.deleted.values() if d.key == key), key=lambda d: (d.created_at, d.uid))
    result = _reconcile(state, ds, now, memo) if ds is not None else None
    for old in gone:
        collected = _cascade(state, old, now, DaemonSetStatus())
        if collected.decision is None:
            result = _sooner(result, collected.requeue_after) if result is not None else collected
            continue
        if result is not None and result.decision is not None:
            return _sooner(result, 0.0)  # the garbage collection comes right after
        status = result.status if result is not None else collected.status
        after = (
            collected.requeue_after if result is None else _min(result.requeue_after, collected.requeue_after)
        )
        return ReconcileResult(decision=collected.decision, requeue_after=after, status=status)
    return result if result is not None else ReconcileResult(None, None, DaemonSetStatus())


#: a node-scoped reconcile covers at most this many nodes; more changed nodes mean a full one
MAX_SCOPE = 64


def reconcile_nodes(
    state: ClusterState, key: str, nodes: list[str], now: float, memo: EligibilityMemo | None = None
) -> ReconcileResult | None:
    """A reconcile of ``nodes`` only, for a DaemonSet that is otherwise at rest; None when a full
    reconcile is needed instead.

    Why: a node joining a 5,000-node fleet should get its daemon pods in milliseconds, but a full
    reconcile of each DaemonSet walks every node. When nothing else is going on (no command in flight,
    no pod on these nodes to adopt or release, nodes all known), what a full reconcile would decide for
    these nodes is exactly upstream's per-node ``manage`` of them, so that is what this decides, and
    records as a decision whose ``scope`` names the nodes (``replay verify`` recomputes it the same way).
    It leaves out what needs the whole fleet: status (kept as recorded; the controller follows up with a
    full reconcile, which also runs the rolling update and the burst cap).
    """
    ds = state.daemonsets.get(key)
    if (
        ds is None
        or ds.deleting
        or not nodes
        or len(nodes) > MAX_SCOPE
        or any(d.key == key for d in state.deleted.values())
        or ds.spec.selector is None
        or selectors.is_empty(ds.spec.selector)
        or not selectors.is_valid(ds.spec.selector)
        or expectations.pending(state, ds, now)
        or _guard_tripped(ds)
    ):
        return None
    selects = selectors.matcher(ds.spec.selector)
    where = placement(ds.spec.template)
    controlled = has_controls(ds.spec)
    views = []
    for name in sorted(set(nodes)):
        node = state.nodes.get(name)
        if node is None:
            return None
        mine = []
        for pod_key in state.pods_by_node.get(name, ()):
            pod = state.pods[pod_key]
            if pod.owner_uid == ds.uid:
                if not selects(pod.labels):
                    return None  # to be released: a full reconcile's job
                if not (pod.terminal and pod.deletion_timestamp is not None):
                    mine.append(pod)
            elif not pod.owner_uid and pod.namespace == ds.namespace and selects(pod.labels):
                return None  # to be adopted: a full reconcile's job
        if controlled and any(p.phase == "Failed" and not is_updated(p, ds) for p in mine):
            return None  # replaced at its own revision if held back: needs the whole fleet
        eligibility = memo.get(ds.template_hash, where, node) if memo is not None else evaluate(where, node)
        views.append(NodeView(name=name, eligibility=eligibility, pods=sorted(mine, key=sort_key)))
    plan = manage(ds, views, allows_surge(ds.spec), now)
    _cap(plan)
    result = finish(state, ds, now, plan, ds.status, [], [], scope=tuple(v.name for v in views))
    return result


def _guard_tripped(ds: DaemonSetState) -> bool:
    """A tripped guard may be reverting: which revision a new node gets is then the full reconcile's."""
    found = guard.condition(ds.status, guard.GUARD_CONDITION)
    return found is not None and found.status == "True"


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _sooner(result: ReconcileResult, seconds: float | None) -> ReconcileResult:
    return msgspec.structs.replace(result, requeue_after=_min(result.requeue_after, seconds))


def _reconcile(
    state: ClusterState, ds: DaemonSetState, now: float, memo: EligibilityMemo | None = None
) -> ReconcileResult:
    if ds.deleting:
        if ds.deletion_policy == "Orphan":
            return ReconcileResult(None, None, ds.status)
        return _cascade(state, ds, now, ds.status)
    if (
        ds.spec.selector is None
        or selectors.is_empty(ds.spec.selector)
        or not selectors.is_valid(ds.spec.selector)
    ):
        return _selecting_all(state, ds, now)

    claim = claim_pods(state, ds)
    views = node_views(state, placement(ds.spec.template), claim.pods, memo, ds.template_hash)
    found = guard.verdict(ds, views, now)
    real = ds
    if found is not None and found.revert_to:
        # auto-revert: act on the last fully available revision (docs/rollout-control.md)
        ds = guard.reverted(ds, found.revert_to)
        views = node_views(state, placement(ds.spec.template), claim.pods, memo, ds.template_hash)
    stopped = found.hold if found is not None and found.tripped and not found.revert_to else None
    held = {} if found is not None and found.revert_to else held_nodes(ds, views, state.nodes, stopped)
    in_flight = expectations.pending(state, ds, now)
    if in_flight:
        # a create issued before the last apply may carry an older template: its revision is unknown
        extra = [
            virtual_pod(ds, c.node, c.pod_name, c.issued_at, None if c.decision_seq > ds.applied_seq else "")
            for c in in_flight
            if c.kind == "create_pod" and object_key(c.namespace, c.pod_name) not in state.pods
        ]
        seen = with_extra_pods(views, extra)
        plan = Plan(
            notes=[
                Note(
                    c.node,
                    "wait",
                    COMMAND_IN_FLIGHT,
                    f"{c.kind} for pod {c.pod_name} is still in flight",
                    c.pod_name,
                )
                for c in in_flight
            ]
        )
        plan.requeue(expectations.seconds_until_expiry(in_flight, now))
        status = _status(real, ds, seen, held, found, now, ds.observed_generation)
        plan.requeue(availability_timer(ds, seen, now))
        return finish(state, ds, now, plan, status, claim.adopted, claim.released)

    surge = allows_surge(ds.spec)
    controlled = has_controls(ds.spec) and not (found is not None and found.revert_to)
    plan = manage(ds, views, surge, now)
    _replace_held_failed(ds, held, plan)
    if found is not None:
        plan.requeue(found.requeue_after)
        if found.tripped:
            message = found.hold.message + (f"; auto-revert to {found.revert_to}" if found.revert_to else "")
            plan.notes.append(Note("", "wait", guard.GUARD_TRIPPED, message))
    if not plan.has_commands and ds.spec.update_strategy.type == ROLLING_UPDATE:
        rolled = rolling_update(ds, views, now, held if controlled else None)
        touched = {c.node for c in rolled.creates} | {d.node for d in rolled.deletes}
        touched |= {n.node for n in rolled.notes}
        plan.notes = [n for n in plan.notes if n.node not in touched] + rolled.notes
        plan.creates, plan.deletes = rolled.creates, rolled.deletes
    _cap(plan)
    assign_pod_names(state, ds, plan)
    created = [virtual_pod(ds, c.node, plan.pod_names[c.node], now, c.revision or None) for c in plan.creates]
    seen = with_extra_pods(views, created)
    status = _status(real, ds, seen, held, found, now, ds.generation)
    plan.requeue(availability_timer(ds, seen, now))
    return finish(state, ds, now, plan, status, claim.adopted, claim.released)


def _status(
    real: DaemonSetState,
    acting: DaemonSetState,
    seen: list[NodeView],
    held: dict[str, Hold],
    found: guard.Verdict | None,
    now: float,
    observed_generation: int,
) -> DaemonSetStatus:
    """Upstream's counts (of the revision acted on), plus, under rollout controls, the guard's
    conditions and a ``Progressing`` condition naming what holds the rollout (docs/rollout-control.md)."""
    status = guard.with_conditions(real, compute_status(acting, seen, now, observed_generation), found, now)
    if has_controls(real.spec) and real.spec.update_strategy.type == ROLLING_UPDATE:
        assessed = progress.assess(real, acting, seen, held, found, now, stable=True)
        status = progress.with_progress_condition(real, status, assessed, now)
    return status


def _replace_held_failed(ds: DaemonSetState, held: dict[str, Hold], plan: Plan) -> None:
    """A failed old pod on a node a rollout control holds back is replaced at its own revision, in the
    same decision that deletes it (docs/rollout-control.md): the replacement of a failed pod must not
    be what moves a held node to the new revision. A revision the DaemonSet no longer knows cannot be
    recreated; that node then gets the current one, as upstream."""
    if not held:
        return
    for delete in plan.deletes:
        pod = delete.pod
        if delete.code != FAILED_DAEMON_POD or delete.node not in held or is_updated(pod, ds):
            continue
        revision = revision_of(pod)
        if not revision or revision not in ds.revisions:
            continue
        hold = held[delete.node]
        message = f"failed pod {pod.name} is replaced at its own revision {revision}: {hold.message}"
        replacement = PlannedCreate(delete.node, REPLACE_HELD_FAILED, message, revision)
        plan.creates = [c for c in plan.creates if c.node != delete.node] + [replacement]


def _cap(plan: Plan) -> None:
    for over in plan.creates[BURST_REPLICAS:]:
        plan.notes.append(
            Note(over.node, "wait", BURST_LIMIT, f"over the burst limit of {BURST_REPLICAS} creates")
        )
    for late in plan.deletes[BURST_REPLICAS:]:
        message = f"over the burst limit of {BURST_REPLICAS} deletes"
        plan.notes.append(Note(late.node, "wait", BURST_LIMIT, message, late.pod.name))
    del plan.creates[BURST_REPLICAS:]
    del plan.deletes[BURST_REPLICAS:]


def _cascade(state: ClusterState, ds: DaemonSetState, now: float, status: DaemonSetStatus) -> ReconcileResult:
    """Play the garbage collector for a DaemonSet deleted with a background or foreground cascade."""
    plan = Plan()
    waiting = []
    for key in sorted(state.pods_by_owner.get(ds.uid, ())):
        pod = state.pods.get(key)
        if pod is None or pod.deletion_timestamp is not None:
            continue
        if expectations.pod_has_pending_command(state, key, now):
            waiting.append(pod)
            continue
        policy = ds.deletion_policy or "Background"
        message = f"daemonset {ds.key} was deleted ({policy} cascade); its pods go with it"
        plan.deletes.append(PlannedDelete(pod.node, pod, CASCADE_DELETE, message))
    in_flight = [
        state.in_flight[i]
        for p in waiting
        for i in sorted(state.in_flight_by_pod.get(p.key, ()))
        if i in state.in_flight and expectations.is_live(state.in_flight[i], now)
    ]
    plan.requeue(expectations.seconds_until_expiry(in_flight, now))
    _cap(plan)
    if not plan.deletes:
        return ReconcileResult(None, plan.requeue_after, status)
    return finish(state, ds, now, plan, status, [], [])


def _selecting_all(state: ClusterState, ds: DaemonSetState, now: float) -> ReconcileResult:
    if ds.last_decision_seq > ds.applied_seq:
        return ReconcileResult(None, None, ds.status)
    message = "this daemon set is selecting all pods (or none): a non-empty, valid selector is required"
    plan = Plan(notes=[Note("", "skip", SELECTING_ALL, message)])
    decision = DecisionRecorded(
        namespace=ds.namespace,
        name=ds.name,
        uid=ds.uid,
        generation=ds.generation,
        now=datetime.fromtimestamp(now, tz=UTC),
        state_seq=state.seq,
        template_hash=ds.template_hash,
        reasons=tuple(
            NodeReason(node=n.node, action=n.action, code=n.code, message=n.message) for n in plan.notes
        ),
        status=ds.status,
    )
    return ReconcileResult(decision, None, ds.status)
