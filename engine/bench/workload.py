"""Synthetic but realistic logs for the benchmarks: what a fleet's history looks like.

Everything is built with the engine's own helpers (manifest parsing and ``apply_daemonset`` for the
DaemonSets, ``pod_name``/``stable_id`` for the commands and pods), so the events
decode, fold and reconcile exactly like the ones a running engine and fleet executor would write:

- ``node.registered`` for every node (labels, a Ready condition, capacity);
- ``daemonset.applied`` for every DaemonSet;
- per DaemonSet, decisions of at most 250 creates (the burst cap) each followed by the executor's
  ``pod.created`` / ``pod.running`` / ``pod.ready`` reports for those pods;
- optionally churn (``history(..., total=...)``): rolling updates of every DaemonSet in turn (a new
  image, then decisions of deletes answered by ``pod.terminating`` / ``pod.deleted`` and decisions of
  creates answered by the three reports above) until the log holds at least ``total`` events.

Sequences are counted from ``start_seq`` so decision ``state_seq`` values, pod names and command ids
match what they would be in a log that starts empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from engine.core.manifests import apply_daemonset, parse_daemonset
from engine.core.pod_template import pod_name
from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.k8s import REVISION_HASH_LABEL, NodeCondition
from events.types import (
    CreatePod,
    DaemonSetApplied,
    DaemonSetStatus,
    DecisionRecorded,
    DeletePod,
    Event,
    NodeReason,
    NodeRegistered,
    PodCreated,
    PodDeleted,
    PodEvent,
    PodReady,
    PodRunning,
    PodTerminating,
)
from projections.fold import apply_event
from projections.model import ClusterState, DaemonSetState

BURST = 250
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SOURCE = "bench"


def node_name(i: int, prefix: str = "node") -> str:
    return f"{prefix}-{i:05d}"


def node_event(name: str, i: int = 0) -> NodeRegistered:
    return NodeRegistered(
        name=name,
        labels={
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": f"zone-{i % 3}",
        },
        conditions=(NodeCondition(type="Ready", status="True", reason="KubeletReady"),),
        capacity={"cpu": "8", "memory": "32Gi", "pods": "110"},
    )


def ds_doc(index: int, image: str = "registry.example/agent:1.0") -> dict[str, Any]:
    labels = {"app": f"agent-{index:02d}", "tier": "node"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": f"agent-{index:02d}", "namespace": "kube-system", "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": BURST}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                        }
                    ],
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                },
            },
        },
    }


def ds_event(
    index: int, *, image: str = "registry.example/agent:1.0", existing: DaemonSetState | None = None
) -> DaemonSetApplied:
    manifest = parse_daemonset(ds_doc(index, image))
    return apply_daemonset(manifest, existing, uid=stable_id("bench-ds", index)).event


class _Pod(msgspec.Struct):
    name: str
    uid: str
    command_id: str


class History:
    """Builds envelopes in log order; ``seq`` is the sequence the next envelope will get."""

    def __init__(self, nodes: int, daemonsets: int, *, start_seq: int = 1, node_prefix: str = "node") -> None:
        self.nodes = [node_name(i, node_prefix) for i in range(nodes)]
        self.daemonsets = daemonsets
        self.seq = start_seq
        self.scratch = ClusterState()  # the DaemonSets only
        self.pods: dict[tuple[int, str], _Pod] = {}
        self.images: dict[int, int] = {}

    def _wrap(self, event: Event, causation: str = "", key: str = "") -> Envelope:
        at = T0 + timedelta(milliseconds=self.seq)
        key = key or stable_id("bench-event", self.seq, event.TAG)
        env = wrap(event, id=key, occurred_at=at, source=SOURCE, causation_id=causation)
        self.seq += 1
        return env

    def _report(self, event: PodEvent) -> Envelope:
        # the executor's id for a report (its correlation id too), hashed once
        event_id = stable_id("report", event.TAG, event.namespace, event.name, event.command_id)
        return self._wrap(event, event.command_id, event_id)

    def ds(self, index: int) -> DaemonSetState:
        return self.scratch.daemonsets[f"kube-system/agent-{index:02d}"]

    def register_nodes(self) -> Iterator[Envelope]:
        for i, name in enumerate(self.nodes):
            yield self._wrap(node_event(name, i))

    def apply(self, index: int) -> Envelope:
        generation = self.images.get(index, 0)
        existing = self.scratch.daemonsets.get(f"kube-system/agent-{index:02d}")
        event = ds_event(index, image=f"registry.example/agent:1.{generation}", existing=existing)
        env = self._wrap(event)
        apply_event(self.scratch, event, self.seq - 1, 0.0)
        return env

    def _status(self, ds: DaemonSetState, count: int) -> DaemonSetStatus:
        n = len(self.nodes)
        return DaemonSetStatus(
            desired_number_scheduled=n,
            current_number_scheduled=count,
            number_ready=count,
            number_available=count,
            updated_number_scheduled=count,
            number_unavailable=n - count,
            observed_generation=ds.generation,
        )

    def _decision(
        self, ds: DaemonSetState, commands: list[Any], reasons: list[NodeReason], count: int
    ) -> Envelope:
        decision = DecisionRecorded(
            namespace=ds.namespace,
            name=ds.name,
            uid=ds.uid,
            generation=ds.generation,
            now=T0 + timedelta(milliseconds=self.seq),
            state_seq=self.seq - 1,
            template_hash=ds.template_hash,
            commands=tuple(commands),
            reasons=tuple(reasons),
            status=self._status(ds, count),
            leader="bench",
        )
        return self._wrap(decision)

    def create_batch(self, index: int, nodes: list[str], count_after: int) -> Iterator[Envelope]:
        """One decision creating a pod of DaemonSet ``index`` on each of ``nodes``, then the reports."""
        ds = self.ds(index)
        state_seq = self.seq - 1
        commands: list[CreatePod] = []
        reasons: list[NodeReason] = []
        for node in nodes:
            cmd = CreatePod(
                id=stable_id(ds.uid, node, state_seq, "create_pod"),
                node=node,
                namespace=ds.namespace,
                pod_name=pod_name(ds.name, ds.uid, node, state_seq),
                pod_uid=stable_id(ds.uid, node, state_seq, "pod"),
                owner_uid=ds.uid,
                owner_name=ds.name,
                revision_hash=ds.template_hash,
                # recorded by revision, as the engine records it (engine/core/decision.py): the
                # template travels on the command stream only
                template=None,
            )
            commands.append(cmd)
            reasons.append(
                NodeReason(
                    node=node,
                    action="create",
                    code="MissingPod",
                    message="should run and has no daemon pod",
                    pod=cmd.pod_name,
                    command_id=cmd.id,
                )
            )
        yield self._decision(ds, list(commands), reasons, count_after)
        labels = {**ds.spec.template.metadata.labels, REVISION_HASH_LABEL: ds.template_hash}
        for cmd in commands:
            yield self._report(
                PodCreated(
                    **_common(cmd),
                    uid=cmd.pod_uid,
                    owner_uid=ds.uid,
                    owner_name=ds.name,
                    revision_hash=ds.template_hash,
                    labels=labels,
                )
            )
            self.pods[(index, cmd.node)] = _Pod(cmd.pod_name, cmd.pod_uid, cmd.id)
        for cmd in commands:
            yield self._report(PodRunning(**_common(cmd)))
            yield self._report(PodReady(**_common(cmd)))

    def delete_batch(self, index: int, nodes: list[str], count_after: int) -> Iterator[Envelope]:
        ds = self.ds(index)
        state_seq = self.seq - 1
        commands: list[DeletePod] = []
        reasons: list[NodeReason] = []
        for node in nodes:
            pod = self.pods[(index, node)]
            cmd = DeletePod(
                id=stable_id(ds.uid, pod.uid, state_seq, "delete_pod"),
                node=node,
                namespace=ds.namespace,
                pod_name=pod.name,
                reason="OutdatedPod",
            )
            commands.append(cmd)
            reasons.append(
                NodeReason(
                    node=node,
                    action="delete",
                    code="OutdatedPod",
                    message="pod has an old revision",
                    pod=pod.name,
                    command_id=cmd.id,
                )
            )
        yield self._decision(ds, list(commands), reasons, count_after)
        for cmd in commands:
            yield self._report(PodTerminating(**_common(cmd)))
            yield self._report(PodDeleted(**_common(cmd)))

    def converge(self) -> Iterator[Envelope]:
        """Nodes, DaemonSets, and every pod created and Ready."""
        yield from self.register_nodes()
        for index in range(self.daemonsets):
            yield self.apply(index)
        for index in range(self.daemonsets):
            for start in range(0, len(self.nodes), BURST):
                chunk = self.nodes[start : start + BURST]
                yield from self.create_batch(index, chunk, start + len(chunk))

    def rollout(self, index: int) -> Iterator[Envelope]:
        self.images[index] = self.images.get(index, 0) + 1
        yield self.apply(index)
        n = len(self.nodes)
        for start in range(0, n, BURST):
            chunk = self.nodes[start : start + BURST]
            yield from self.delete_batch(index, chunk, n - len(chunk))
            yield from self.create_batch(index, chunk, n)

    def events(self, total: int | None = None) -> Iterator[Envelope]:
        """The converged fleet, then rollouts until at least ``total`` events (whole batches only)."""
        first = self.seq
        yield from self.converge()
        index = 0
        while total is not None and self.seq - first < total and self.daemonsets:
            for env in self.rollout(index % self.daemonsets):
                yield env
                if self.seq - first >= total and env.type == "pod.ready" and self._batch_done(env):
                    return
            index += 1

    def _batch_done(self, env: Envelope) -> bool:
        # a create batch ends with the ready report of its last pod: stop only there, so nothing is
        # left in flight
        data = env.data
        assert isinstance(data, PodReady)
        return data.node == self.nodes[-1] or (self.nodes.index(data.node) + 1) % BURST == 0


def _common(cmd: CreatePod | DeletePod) -> dict[str, Any]:
    return {"namespace": cmd.namespace, "name": cmd.pod_name, "node": cmd.node, "command_id": cmd.id}


def batched(items: Iterator[Envelope], size: int) -> Iterator[list[Envelope]]:
    batch: list[Envelope] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
