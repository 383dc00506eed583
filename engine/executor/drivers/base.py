"""The port between an executor and what actually runs pods (the kubelet's role).

A driver is told to start or stop a pod and reports what it observes through ``PodReporter``; it never
decides anything. Drivers must tolerate being asked twice (the executor dedupes commands, but a
restarted executor may resume a pod the driver already knows).

Two kinds of driver. The simulated one's pods live only in the executor, so they end with it and a
restarted executor resumes them from the log. A ``Lasting`` driver's pods (real processes) outlive the
executor, as containers outlive a kubelet restart: upgrading executors across a fleet must not take
every daemon down. Such a driver keeps what it needs to find its pods again on the node itself,
re-attaches to them at start (``reattach``) and, at a stop, leaves them running unless told otherwise
(``shutdown``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypedDict, runtime_checkable

import msgspec

from events.k8s import REVISION_HASH_LABEL, PodTemplate
from events.types import (
    PodCreated,
    PodDeleted,
    PodEvent,
    PodEvicted,
    PodFailed,
    PodReady,
    PodRunning,
    PodSucceeded,
    PodTerminating,
)


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
    #: the create command that made the pod: every report about its life carries it, so the report ids
    #: (derived from it) are the same when a restarted or reconnected executor reports a state again
    command_id: str = ""
    #: why the pod failed, when its driver keeps it (re-reports then say the same)
    reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def grace_seconds(self) -> float:
        """The template's ``terminationGracePeriodSeconds`` (30 when unset, as upstream): what a stop
        that names no grace period of its own gives the pod."""
        return float(self.template.spec.get("terminationGracePeriodSeconds", 30))


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


def state_reports(pod: LocalPod) -> list[PodEvent]:
    """The reports that together say what the executor knows of the pod's life now, in the order they
    were first made, each with the pod's create command id (so their ids equal the first reports' ids).

    Never ``pod.created``: the fold may have dropped the pod meanwhile without telling the executor (its
    node was removed), and a created appended then, past the server's duplicate window, would bring the
    pod back; every later state of a pod the log no longer has is ignored by the fold. A failure reason
    reads the same as the first only if the driver kept it (``reason``); the fold treats it alike.
    """
    if pod.phase == "Deleted":
        return []
    common = pod_fields(pod, pod.command_id)
    out: list[PodEvent] = []
    if pod.phase == "Running":
        out.append(PodRunning(**common))
        if pod.ready:
            out.append(PodReady(**common))
    elif pod.phase == "Failed":
        out.append(PodFailed(**common, reason=pod.reason or "failed (reported again)"))
    elif pod.phase == "Succeeded":
        out.append(PodSucceeded(**common))
    if pod.terminating:
        out.append(PodTerminating(**common, grace_period_seconds=int(pod.grace_seconds)))
    return out


class PodReporter(Protocol):
    async def report(self, event: PodEvent, *, causation_id: str = "") -> None: ...


async def report_terminating(
    pod: LocalPod, command_id: str, reporter: PodReporter, grace_seconds: float
) -> None:
    """The first step of every stop: mark the pod terminating and report it, once (a stop resumed by a
    restarted executor finds it already said)."""
    if pod.terminating:
        return
    pod.terminating = True
    await reporter.report(
        PodTerminating(**pod_fields(pod, command_id), grace_period_seconds=int(grace_seconds)),
        causation_id=command_id,
    )


def gone_report(pod: LocalPod, command_id: str, *, evict: bool) -> PodDeleted | PodEvicted:
    """The last report of every stop: evicted (the taint manager's or an API eviction) or deleted."""
    common = pod_fields(pod, command_id)
    return PodEvicted(**common, reason="evicted") if evict else PodDeleted(**common)


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


class LogRead(msgspec.Struct, frozen=True, kw_only=True):
    """Some of a pod's log: ``text`` (whole lines, unless a line outgrew the read or the pod ended),
    ``cursor`` where the next read starts (a position only the driver interprets), ``more`` when the
    read stopped at its size limit with more there already."""

    text: str
    cursor: int
    more: bool = False


@runtime_checkable
class KeepsLogs(Protocol):
    """A driver that can show its pods' logs (``dsctl logs``, served by engine/executor/pod_logs.py)."""

    async def read_log(
        self,
        namespace: str,
        name: str,
        *,
        cursor: int | None,
        tail: int,
        limit: int,
        partial: bool,
        pod: LocalPod | None,
    ) -> LogRead | None:
        """The log from ``cursor`` on (None: its last ``tail`` lines, every line when ``tail`` < 0), at
        most about ``limit`` bytes of text; ``partial``: also an incomplete last line (else it waits
        for its end). ``pod`` is the executor's pod of that name, when it has one. None when no log of
        the pod is kept here."""
        ...


@runtime_checkable
class Forgets(Protocol):
    """A driver that can let a pod go without a trace on the node: what an executor does with the pods
    of a removed node when they live only in the driver (the simulator; see engine/executor/executor.py)."""

    async def forget(self, pod: LocalPod) -> None:
        """Stop the pod's life at once and report nothing about it (its node is gone from the log)."""
        ...


@runtime_checkable
class Lasting(Protocol):
    """A driver whose pods outlive the executor (see the module notes)."""

    async def reattach(
        self, pods: Sequence[LocalPod], reporter: PodReporter, *, nodes: frozenset[str] | None
    ) -> None:
        """Take over the pods the log places on ``nodes`` (None: every node) after an executor start.

        Re-attach to those still running; report those that are gone (so they are replaced); start
        those never started; stop what runs on the node for a pod the log does not have.
        """
        ...

    async def shutdown(self, reporter: PodReporter, *, stop_pods: bool) -> None:
        """Stop watching; leave the pods running, or (``stop_pods``) stop each and report it failed."""
        ...
