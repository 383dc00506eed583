"""A small cluster for core tests: events folded by the real projection, reconciles run by the core,
and a simulated executor that carries out commands the way a kubelet would report them.

Each emitted event gets the next stream sequence and the world's clock as its time; the clock only moves
when a test moves it, so every run is deterministic.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from engine.core.dispatch import command_with_template, commands_to_send
from engine.core.manifests import apply_daemonset, parse_daemonset
from engine.core.reconcile import ReconcileResult, reconcile
from events.ids import stable_id
from events.k8s import REVISION_HASH_LABEL, NodeCondition, Taint
from events.types import (
    CreatePod,
    DaemonSetApplied,
    DaemonSetDeleted,
    DecisionRecorded,
    DeletePod,
    Event,
    NodeRegistered,
    NodeRemoved,
    PodCreated,
    PodDeleted,
    PodFailed,
    PodReady,
    PodRunning,
    PodSucceeded,
    PodTerminating,
    PropagationPolicy,
)
from projections.fold import apply_event
from projections.model import ClusterState, DaemonSetState, PodState

SIMPLE_LABELS = {"name": "simple-daemon", "type": "production"}
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KEY = "default/foo"


def ds_doc(
    name: str = "foo",
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    image: str = "foo/bar",
    strategy: dict[str, Any] | None = None,
    min_ready: int | None = None,
    history: int | None = 2,
    pod_spec: dict[str, Any] | None = None,
    selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fixture DaemonSet of docs/upstream-semantics.md B (``name=simple-daemon,type=production``,
    history 2)."""
    template_labels = dict(labels or SIMPLE_LABELS)
    spec: dict[str, Any] = {
        "selector": selector if selector is not None else {"matchLabels": dict(template_labels)},
        "template": {
            "metadata": {"labels": template_labels},
            "spec": {"containers": [{"name": "foo", "image": image}], **(pod_spec or {})},
        },
    }
    if strategy is not None:
        spec["updateStrategy"] = strategy
    if min_ready is not None:
        spec["minReadySeconds"] = min_ready
    if history is not None:
        spec["revisionHistoryLimit"] = history
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def on_delete() -> dict[str, Any]:
    return {"type": "OnDelete"}


def rolling(max_unavailable: int | str = 1, max_surge: int | str = 0) -> dict[str, Any]:
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": max_surge},
    }


def surge(max_surge: int | str = 1) -> dict[str, Any]:
    return rolling(0, max_surge)


def taint(key: str, effect: str, value: str = "") -> Taint:
    return Taint(key=key, value=value, effect=effect)


class World:
    def __init__(self) -> None:
        self.state = ClusterState()
        self.now = T0
        self.seq = 0
        self.decisions: list[DecisionRecorded] = []
        self._uids = 0

    # --- facts -------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.seq += 1
        self.state.seq = self.seq
        self.state.last_time = self.now
        apply_event(self.state, event, self.seq, self.now)

    def tick(self, seconds: float) -> None:
        self.now += seconds

    def node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        taints: Iterable[Taint] = (),
        unschedulable: bool = False,
        conditions: Iterable[NodeCondition] = (),
    ) -> None:
        self.emit(
            NodeRegistered(
                name=name,
                labels=dict(labels or {}),
                taints=tuple(taints),
                unschedulable=unschedulable,
                conditions=tuple(conditions),
            )
        )

    def nodes(self, count: int, labels: dict[str, str] | None = None, start: int = 0) -> list[str]:
        names = [f"node-{i}" for i in range(start, start + count)]
        for n in names:
            self.node(n, labels)
        return names

    def remove_node(self, name: str) -> None:
        self.emit(NodeRemoved(name=name))

    def apply(self, doc: dict[str, Any]) -> DaemonSetApplied:
        manifest = parse_daemonset(doc)
        existing = self.state.daemonsets.get(manifest.key)
        self._uids += 1
        outcome = apply_daemonset(manifest, existing, uid=f"uid-{manifest.name}-{self._uids}")
        self.emit(outcome.event)
        return outcome.event

    def delete(self, key: str = KEY, policy: PropagationPolicy = "Background") -> None:
        ds = self.state.daemonsets[key]
        self.emit(
            DaemonSetDeleted(namespace=ds.namespace, name=ds.name, uid=ds.uid, propagation_policy=policy)
        )

    def ds(self, key: str = KEY) -> DaemonSetState:
        return self.state.daemonsets[key]

    def pod(
        self,
        node: str,
        name: str | None = None,
        *,
        ds_key: str | None = KEY,
        phase: str = "Running",
        ready: bool = True,
        revision: str | None = None,
        labels: dict[str, str] | None = None,
        namespace: str = "default",
        owner_uid: str | None = None,
    ) -> PodState:
        """A pod reported by an executor: owned by ``ds_key``'s DaemonSet unless ``ds_key`` is None."""
        ds = self.state.daemonsets.get(ds_key) if ds_key else None
        self._uids += 1
        name = name or f"pod-{self._uids}"
        revision = revision if revision is not None else (ds.template_hash if ds else "")
        pod_labels = dict(labels if labels is not None else SIMPLE_LABELS)
        if revision:
            pod_labels[REVISION_HASH_LABEL] = revision
        self.emit(
            PodCreated(
                namespace=namespace,
                name=name,
                node=node,
                uid=f"poduid-{self._uids}",
                owner_uid=owner_uid if owner_uid is not None else (ds.uid if ds else ""),
                owner_name=ds.name if ds else "",
                revision_hash=revision,
                labels=pod_labels,
            )
        )
        self._phase(namespace, name, node, phase, ready)
        return self.state.pods[f"{namespace}/{name}"]

    def _phase(
        self, namespace: str, name: str, node: str, phase: str, ready: bool, command_id: str = ""
    ) -> None:
        ident = {"namespace": namespace, "name": name, "node": node, "command_id": command_id}
        if phase in ("Running",):
            self.emit(PodRunning(**ident))
            if ready:
                self.emit(PodReady(**ident))
        elif phase == "Failed":
            self.emit(PodFailed(**ident))
        elif phase == "Succeeded":
            self.emit(PodSucceeded(**ident))

    def fail(self, pod: PodState) -> None:
        self.emit(PodFailed(namespace=pod.namespace, name=pod.name, node=pod.node))

    def ready(self, pod: PodState) -> None:
        self.emit(PodReady(namespace=pod.namespace, name=pod.name, node=pod.node))

    def terminating(self, pod: PodState) -> None:
        self.emit(PodTerminating(namespace=pod.namespace, name=pod.name, node=pod.node))

    def gone(self, pod: PodState) -> None:
        self.emit(PodDeleted(namespace=pod.namespace, name=pod.name, node=pod.node))

    def pods_on(self, node: str, ds_key: str | None = KEY) -> list[PodState]:
        keys = self.state.pods_by_node.get(node, set())
        pods = [self.state.pods[k] for k in sorted(keys)]
        if ds_key is None:
            return pods
        ds = self.state.daemonsets.get(ds_key)
        return [p for p in pods if ds is not None and p.owner_uid == ds.uid]

    # --- the controller and the executors ----------------------------------------------------------

    def reconcile(self, key: str = KEY) -> ReconcileResult:
        snapshot = copy.deepcopy(self.state)
        result = reconcile(self.state, key, self.now)
        assert self.state == snapshot, "reconcile must not change the state it reads"
        return result

    def record(self, result: ReconcileResult) -> None:
        if result.decision is not None:
            self.decisions.append(result.decision)
            self.emit(result.decision)

    def execute(self, result: ReconcileResult, *, ready: bool = True, graceful: bool = False) -> None:
        """Record the decision, then carry out every command as an executor would report it."""
        self.record(result)
        if result.decision is None:
            return
        for command in result.decision.commands:
            self.carry_out(command, ready=ready, graceful=graceful)

    def carry_out(
        self, command: CreatePod | DeletePod | Any, *, ready: bool = True, graceful: bool = False
    ) -> None:
        if isinstance(command, CreatePod):
            # a decision records creates by revision; the executor gets them whole
            command = command_with_template(self.state, command)
            assert isinstance(command, CreatePod) and command.template is not None
            self.emit(
                PodCreated(
                    namespace=command.namespace,
                    name=command.pod_name,
                    node=command.node,
                    command_id=command.id,
                    uid=command.pod_uid,
                    owner_uid=command.owner_uid,
                    owner_name=command.owner_name,
                    revision_hash=command.revision_hash,
                    labels=dict(command.template.metadata.labels),
                )
            )
            self._phase(command.namespace, command.pod_name, command.node, "Running", ready, command.id)
        elif isinstance(command, DeletePod):
            ident = {
                "namespace": command.namespace,
                "name": command.pod_name,
                "node": command.node,
                "command_id": command.id,
            }
            if graceful:
                self.emit(PodTerminating(**ident))
            self.emit(PodDeleted(**ident))

    def step(self, key: str = KEY, *, ready: bool = True) -> ReconcileResult:
        result = self.reconcile(key)
        self.execute(result, ready=ready)
        return result

    def settle(self, key: str = KEY, rounds: int = 50) -> int:
        """Reconcile and execute until a reconcile issues no command; returns the rounds used."""
        for i in range(rounds):
            result = self.step(key)
            if result.decision is None or not result.decision.commands:
                return i
        raise AssertionError(f"no convergence in {rounds} rounds")


def sent_creates(w: World, result: ReconcileResult) -> list[CreatePod]:
    """The creates as executors receive them: derived from the recorded decision alone, with their
    templates restored from the revision (``engine.core.dispatch``, what the engine's relay sends)."""
    if result.decision is None:
        return []
    return [c for c in commands_to_send(w.state, result.decision) if isinstance(c, CreatePod)]


def creates(result: ReconcileResult) -> list[CreatePod]:
    """The creates the decision records (by revision; ``World.carry_out`` makes them whole, as the
    engine's relay does)."""
    return [c for c in (result.decision.commands if result.decision else ()) if isinstance(c, CreatePod)]


def deletes(result: ReconcileResult) -> list[DeletePod]:
    return [c for c in (result.decision.commands if result.decision else ()) if isinstance(c, DeletePod)]


def counts(result: ReconcileResult) -> tuple[int, int]:
    return len(creates(result)), len(deletes(result))


def created_nodes(result: ReconcileResult) -> list[str]:
    return sorted(c.node for c in creates(result))


def deleted_pods(result: ReconcileResult) -> list[str]:
    return sorted(c.pod_name for c in deletes(result))


def reason_codes(result: ReconcileResult, node: str) -> list[str]:
    return [r.code for r in (result.decision.reasons if result.decision else ()) if r.node == node]


def uid_for(*parts: str) -> str:
    return stable_id(*parts)
