"""Turning a plan into the recorded decision: commands with their ids, a reason per node, and a record
small enough for one message.

Why apart from ``reconcile``: the phases decide *what* (a plan of creates, deletes and notes); this is
*how it is written down*, shared by the full reconcile, the node-scoped one and the cascade, and it is
what ``replay verify`` compares field by field. Ids derive from the DaemonSet uid, the node or pod, the
state's sequence and the command kind, so the same state always records the same decision.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from engine.core import selectors
from engine.core.plan import Plan, PlannedCreate, PlannedDelete
from engine.core.pod_template import pod_name
from engine.core.uids import stable_uuid
from events.ids import stable_id
from events.k8s import scheduling_spec
from events.types import (
    AnyCommand,
    CreatePod,
    DaemonSetStatus,
    DecisionRecorded,
    DeletePod,
    FailedPodBackoff,
    NodeAction,
    NodeReason,
)
from projections.model import ClusterState, DaemonSetState, PodState, object_key


class ReconcileResult(msgspec.Struct, frozen=True):
    decision: DecisionRecorded | None
    requeue_after: float | None
    status: DaemonSetStatus
    #: the per-node reasons, also when nothing changed and ``decision`` is None (for ``explain``).
    #: There is deliberately no list of commands here: what is sent is derived from the recorded
    #: decision alone (``engine.core.dispatch``), so nothing can be sent that the log does not hold,
    #: nor recorded and left unsent (a second list once let a cascade's deletes go unpublished).
    reasons: tuple[NodeReason, ...] = ()


def assign_pod_names(state: ClusterState, ds: DaemonSetState, plan: Plan) -> None:
    """Name each pod to create, never reusing a name that exists, is in flight, or was just chosen.

    Names are ``<ds>-<5 chars>`` from a hash of (uid, node, state seq): 27^5 names, so at fleet scale
    two nodes would collide (the birthday bound passes 50% near 4,500 pods). The API server refuses a
    duplicate generated name and the client retries; here the retry is deterministic: the next
    attempt number joins the hash until the name is free.
    """
    taken: set[str] = set()
    for create in plan.creates:
        attempt = 0
        while True:
            parts: tuple[str | int, ...] = (ds.uid, create.node, state.seq)
            name = pod_name(ds.name, *(parts if attempt == 0 else (*parts, attempt)))
            key = object_key(ds.namespace, name)
            if name not in taken and key not in state.pods and key not in state.in_flight_by_pod:
                break
            attempt += 1
        taken.add(name)
        plan.pod_names[create.node] = name


def _grace_period(ds: DaemonSetState) -> int | None:
    try:
        return scheduling_spec(ds.spec.template).termination_grace_period_seconds
    except msgspec.ValidationError:
        return None


def _create(
    state: ClusterState, ds: DaemonSetState, item: PlannedCreate, name: str
) -> tuple[CreatePod, NodeReason]:
    command = CreatePod(
        id=stable_id(ds.uid, item.node, state.seq, "create_pod"),
        node=item.node,
        namespace=ds.namespace,
        pod_name=name,
        pod_uid=stable_uuid(ds.uid, item.node, state.seq, "pod"),
        owner_uid=ds.uid,
        owner_name=ds.name,
        revision_hash=item.revision or ds.template_hash,
        # recorded by revision: the template travels on the command stream only (engine.core.dispatch)
        template=None,
    )
    return command, _acted("create", item.node, item.code, item.message, command)


def _node_of(reason: NodeReason) -> str:
    return reason.node


def _acted(action: NodeAction, node: str, code: str, message: str, command: AnyCommand) -> NodeReason:
    """The reason recorded for a node something is done to, naming the command that does it."""
    return NodeReason(
        node=node, action=action, code=code, message=message, pod=command.pod_name, command_id=command.id
    )


def _delete(
    state: ClusterState, ds: DaemonSetState, item: PlannedDelete, grace: int | None
) -> tuple[DeletePod, NodeReason]:
    pod = item.pod
    command = DeletePod(
        id=stable_id(ds.uid, pod.uid or pod.key, state.seq, "delete_pod"),
        node=pod.node,
        namespace=pod.namespace,
        pod_name=pod.name,
        reason=item.code,
        grace_period_seconds=grace,
    )
    return command, _acted("delete", item.node, item.code, item.message, command)


def finish(
    state: ClusterState,
    ds: DaemonSetState,
    now: float,
    plan: Plan,
    status: DaemonSetStatus,
    adopted: list[PodState],
    released: list[PodState],
    scope: tuple[str, ...] = (),
) -> ReconcileResult:
    grace = _grace_period(ds)
    commands: list[AnyCommand] = []
    # every reason, then one stable sort by node: the same order as grouping per node in name order
    # (creates, deletes, notes, adoptions, releases within a node), without a list per node
    listed: list[NodeReason] = []
    if len(plan.pod_names) < len(plan.creates):
        assign_pod_names(state, ds, plan)
    for create in plan.creates:
        made, reason = _create(state, ds, create, plan.pod_names[create.node])
        commands.append(made)
        listed.append(reason)
    for delete in plan.deletes:
        removal, reason = _delete(state, ds, delete, grace)
        commands.append(removal)
        listed.append(reason)
    listed.extend(
        NodeReason(node=note.node, action=note.action, code=note.code, message=note.message, pod=note.pod)
        for note in plan.notes
    )
    for pod in adopted:
        message = f"orphan pod {pod.name} matches selector {selectors.describe(ds.spec.selector)}; adopted"
        listed.append(
            NodeReason(node=pod.node, action="adopt", code="Adopted", message=message, pod=pod.name)
        )
    for pod in released:
        message = (
            f"pod {pod.name} no longer matches selector {selectors.describe(ds.spec.selector)}; released"
        )
        listed.append(
            NodeReason(node=pod.node, action="release", code="Released", message=message, pod=pod.name)
        )
    backoffs = tuple(
        FailedPodBackoff(
            node=node,
            generation=ds.generation,
            delay_seconds=step.delay_seconds,
            until=datetime.fromtimestamp(step.until, tz=UTC),
        )
        for node, step in sorted(plan.backoffs.items())
    )
    reasons = tuple(sorted(listed, key=_node_of))
    changed = commands or adopted or released or backoffs or status != ds.status
    if not changed:
        return ReconcileResult(None, plan.requeue_after, status, reasons)
    decision = DecisionRecorded(
        namespace=ds.namespace,
        name=ds.name,
        uid=ds.uid,
        generation=ds.generation,
        now=datetime.fromtimestamp(now, tz=UTC),
        state_seq=state.seq,
        template_hash=ds.template_hash,
        commands=tuple(commands),
        reasons=compact_reasons(reasons),
        status=status,
        requeue_after_seconds=plan.requeue_after,
        backoffs=backoffs,
        adopted=tuple(p.key for p in adopted),
        released=tuple(p.key for p in released),
        scope=scope,
    )
    return ReconcileResult(decision, plan.requeue_after, status, reasons)


#: a group of nodes sharing one routine reason is summarised in the recorded decision above this size
SUMMARY_THRESHOLD = 20
_ACTING = frozenset({"create", "delete", "evict", "adopt", "release"})


def compact_reasons(reasons: tuple[NodeReason, ...]) -> tuple[NodeReason, ...]:
    """The reasons a decision records: every node something was done to, and every other node too,
    except that a group of more than ``SUMMARY_THRESHOLD`` nodes sharing one action and code (4,750
    nodes "over the burst limit", 1,000 "taint not tolerated") becomes one summary (``node`` empty,
    the count and the first nodes in the message). A fleet-wide decision otherwise outgrows the
    server's message size (a 5,000-node one measured 787 KB); ``explain`` recomputes the full list.
    """
    groups: dict[tuple[str, str], list[NodeReason]] = {}
    for r in reasons:
        if r.action not in _ACTING and r.node:
            groups.setdefault((r.action, r.code), []).append(r)
    big = {k for k, v in groups.items() if len(v) > SUMMARY_THRESHOLD}
    if not big:
        return reasons
    kept = tuple(r for r in reasons if not (r.node and r.action not in _ACTING and (r.action, r.code) in big))
    summaries = []
    for action, code in sorted(big):
        members = groups[(action, code)]
        first = ", ".join(r.node for r in members[:5])
        summaries.append(
            NodeReason(
                node="",
                action=members[0].action,
                code=code,
                message=f"{len(members)} nodes ({first}, ...): {members[0].message}",
            )
        )
    return kept + tuple(summaries)
