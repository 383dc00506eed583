"""The port between an executor and what actually runs pods (the kubelet's role).

A driver is told to start or stop a pod and reports what it observes through ``PodReporter``; it never
decides anything. Drivers must tolerate being asked twice (the executor dedupes commands, but a
restarted executor may resume a pod the driver already knows).
"""

from __future__ import annotations

from typing import Protocol, TypedDict

import msgspec

from events.k8s import REVISION_HASH_LABEL, PodTemplate
from events.types import PodCreated, PodEvent


class LocalPod(msgspec.Struct, kw_only=True):
    """What an executor knows of one pod on its node."""

    namespace: str
    name: str
    uid: str
    node: str
    template: PodTemplate
    owner_uid: str = ""
    owner_name: str = ""
    revision_hash: str = ""
    phase: str = "Pending"
    ready: bool = False
    terminating: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodFields(TypedDict):
    """The fields every pod report shares, ready to splat into a PodEvent."""

    namespace: str
    name: str
    node: str
    command_id: str


def pod_fields(pod: LocalPod, command_id: str) -> PodFields:
    return {"namespace": pod.namespace, "name": pod.name, "node": pod.node, "command_id": command_id}


def created_report(pod: LocalPod, command_id: str) -> PodCreated:
    """The ``pod.created`` a driver reports first: owner, revision, and the labels the pod carries."""
    return PodCreated(
        **pod_fields(pod, command_id),
        uid=pod.uid,
        owner_uid=pod.owner_uid,
        owner_name=pod.owner_name,
        revision_hash=pod.revision_hash,
        labels=dict(pod.template.metadata.labels) | {REVISION_HASH_LABEL: pod.revision_hash},
    )


class PodReporter(Protocol):
    async def report(self, event: PodEvent, *, causation_id: str = "") -> None: ...


class Driver(Protocol):
    name: str

    async def start(self, pod: LocalPod, command_id: str, reporter: PodReporter) -> None:
        """Start the pod; report its lifecycle (running, ready, failed, succeeded) as it happens."""
        ...

    async def stop(
        self, pod: LocalPod, command_id: str, reporter: PodReporter, *, grace_seconds: float, evict: bool
    ) -> None:
        """Stop the pod; report terminating, then deleted (or evicted)."""
        ...

    async def close(self) -> None:
        """Stop every background task and process the driver started."""
        ...
