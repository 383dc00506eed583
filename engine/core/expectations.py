"""Commands in flight: the event-sourced form of upstream's ControllerExpectations
(docs/upstream-semantics.md A.8).

A DaemonSet's expectations are unsatisfied while any command it issued is unanswered (no pod report
yet) and younger than ``EXPECTATIONS_TIMEOUT``, upstream's 5-minute ``ExpectationsTimeout``. While they
are unsatisfied the reconcile only recomputes status, so no node ever gets a second command while one
is pending. An expired command no longer blocks: as upstream, the controller then trusts what it sees.

The read model's in-flight entries are keyed by DaemonSet *key*, not uid, so commands left by an earlier
object with the same name must be told apart: a delete aimed at a pod owned by another uid, or any
command issued before this object was created, belongs to someone else (the garbage collector of a
deleted DaemonSet, or a replaced one) and is not this DaemonSet's expectation.
"""

from __future__ import annotations

from projections.model import ClusterState, DaemonSetState, InFlight, object_key

#: upstream ``ExpectationsTimeout``
EXPECTATIONS_TIMEOUT = 300.0


def is_live(cmd: InFlight, now: float) -> bool:
    return now < cmd.issued_at + EXPECTATIONS_TIMEOUT


def _belongs_to(state: ClusterState, cmd: InFlight, ds: DaemonSetState) -> bool:
    if cmd.issued_at < ds.created_at:
        return False
    if cmd.kind != "create_pod":
        pod = state.pods.get(object_key(cmd.namespace, cmd.pod_name))
        if pod is not None and pod.owner_uid not in ("", ds.uid):
            return False
    return True


def pending(state: ClusterState, ds: DaemonSetState, now: float) -> list[InFlight]:
    """This DaemonSet's unexpired commands in flight, oldest first."""
    ids = state.in_flight_by_ds.get(ds.key, set())
    found = [state.in_flight[i] for i in ids if i in state.in_flight]
    mine = [c for c in found if is_live(c, now) and _belongs_to(state, c, ds)]
    return sorted(mine, key=lambda c: (c.issued_at, c.command_id))


def pod_has_pending_command(state: ClusterState, pod_key: str, now: float) -> bool:
    ids = state.in_flight_by_pod.get(pod_key, set())
    return any(i in state.in_flight and is_live(state.in_flight[i], now) for i in ids)


def seconds_until_expiry(commands: list[InFlight], now: float) -> float | None:
    if not commands:
        return None
    return max(0.0, min(c.issued_at for c in commands) + EXPECTATIONS_TIMEOUT - now)
