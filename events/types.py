"""Every fact and decision the log holds, one frozen Struct each, with a stable dotted tag.

Rules for changing this file (see ``events/upcasting.py``): a new field gets a default; a renamed or
retyped field bumps that event's ``VERSION`` and registers an upcaster for the old shape; a change in
meaning gets a new tag. Tags are the contract with other services, never class names.

Times inside payloads are RFC 3339 strings on the wire (``datetime``); the envelope's ``occurred_at`` is
when the fact happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

import msgspec

from events.k8s import DaemonSetSpec, NodeAddress, NodeCondition, PodTemplate, PropagationPolicy, Taint


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every payload. ``TAG`` names it on the wire; ``VERSION`` is its schema version."""

    TAG: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


# --- node facts -------------------------------------------------------------------------------------


class NodeRegistered(Event, frozen=True, kw_only=True):
    """A node joined (or re-joined, or was re-applied as a whole): its full current shape."""

    TAG: ClassVar[str] = "node.registered"
    name: str
    labels: dict[str, str] = {}
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    conditions: tuple[NodeCondition, ...] = ()
    capacity: dict[str, str] = {}
    #: ``status.addresses``, read from this fact by ``dsctl get endpoints`` (docs/rollout-control.md)
    addresses: tuple[NodeAddress, ...] = ()


class NodeLabelsChanged(Event, frozen=True, kw_only=True):
    """The node's complete new label set (level, not delta, so a replay needs no history)."""

    TAG: ClassVar[str] = "node.labels_changed"
    name: str
    labels: dict[str, str] = {}


class NodeTaintsChanged(Event, frozen=True, kw_only=True):
    """The node's complete new taint list."""

    TAG: ClassVar[str] = "node.taints_changed"
    name: str
    taints: tuple[Taint, ...] = ()


class NodeCordoned(Event, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "node.cordoned"
    name: str


class NodeUncordoned(Event, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "node.uncordoned"
    name: str


class NodeConditionChanged(Event, frozen=True, kw_only=True):
    """One condition (Ready, NetworkUnavailable, MemoryPressure, ...) took a new status."""

    TAG: ClassVar[str] = "node.condition_changed"
    VERSION: ClassVar[int] = 2  # v1 had the condition's fields flat; see events/upcasting.py
    name: str
    condition: NodeCondition


class NodeRemoved(Event, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "node.removed"
    name: str


# --- DaemonSet facts ----------------------------------------------------------------------------------


class DaemonSetApplied(Event, frozen=True, kw_only=True):
    """A DaemonSet was created or changed: the full apps/v1 object after defaulting and validation.

    ``generation`` follows the API server's rule (1 on create, +1 on any spec change);
    ``template_hash`` is ``events.template_hash.template_hash(spec.template)``, carried so that every
    reader agrees on the revision without recomputing it.
    """

    TAG: ClassVar[str] = "daemonset.applied"
    namespace: str
    name: str
    uid: str
    generation: int
    spec: DaemonSetSpec
    template_hash: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class DaemonSetDeleted(Event, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "daemonset.deleted"
    namespace: str
    name: str
    uid: str
    propagation_policy: PropagationPolicy = "Background"


# --- pod facts (reported by executors) ------------------------------------------------------------------


class PodEvent(Event, frozen=True, kw_only=True):
    """Fields every pod report carries. ``command_id`` is the command the executor was carrying out."""

    namespace: str
    name: str
    node: str
    command_id: str = ""


class PodCreated(PodEvent, frozen=True, kw_only=True):
    """The pod object exists on its node (phase Pending). Owner fields are empty for an orphan."""

    TAG: ClassVar[str] = "pod.created"
    uid: str
    owner_uid: str = ""
    owner_name: str = ""
    revision_hash: str = ""
    labels: dict[str, str] = {}


class PodRunning(PodEvent, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "pod.running"


class PodReady(PodEvent, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "pod.ready"


class PodNotReady(PodEvent, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "pod.not_ready"
    reason: str = ""


class PodFailed(PodEvent, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "pod.failed"
    reason: str = ""
    exit_code: int | None = None


class PodSucceeded(PodEvent, frozen=True, kw_only=True):
    TAG: ClassVar[str] = "pod.succeeded"
    exit_code: int = 0


class PodTerminating(PodEvent, frozen=True, kw_only=True):
    """The pod got a deletionTimestamp and is shutting down."""

    TAG: ClassVar[str] = "pod.terminating"
    grace_period_seconds: int = 30


class PodDeleted(PodEvent, frozen=True, kw_only=True):
    """The pod is gone from its node."""

    TAG: ClassVar[str] = "pod.deleted"


class PodEvicted(PodEvent, frozen=True, kw_only=True):
    """The pod was evicted (it goes away like a deleted one, with a reason)."""

    TAG: ClassVar[str] = "pod.evicted"
    reason: str = ""


# --- commands (sent to executors; also recorded inside decisions) ----------------------------------------


class Command(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    """A request to an executor. ``id`` is deterministic (see ``events.ids``) so retries dedupe."""

    id: str
    node: str
    namespace: str
    pod_name: str


class CreatePod(Command, frozen=True, kw_only=True, tag="create_pod"):
    """On the command stream ``template`` is the whole pod template; inside a recorded decision it is
    None and ``revision_hash`` names it (decisions stay small at fleet scale)."""

    pod_uid: str
    owner_uid: str
    owner_name: str
    revision_hash: str
    template: PodTemplate | None = None


class DeletePod(Command, frozen=True, kw_only=True, tag="delete_pod"):
    reason: str = ""
    grace_period_seconds: int | None = None


class EvictPod(Command, frozen=True, kw_only=True, tag="evict_pod"):
    reason: str = ""


AnyCommand = CreatePod | DeletePod | EvictPod

# --- decisions -------------------------------------------------------------------------------------------

NodeAction = Literal["create", "delete", "evict", "keep", "skip", "wait", "adopt", "release"]


class NodeReason(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a reconcile did or declined to do on one node, for a person (``message``) and a program
    (``action``, ``code``)."""

    node: str
    action: NodeAction
    code: str
    message: str
    pod: str = ""
    command_id: str = ""


class DaemonSetCondition(msgspec.Struct, frozen=True, rename="camel", kw_only=True, omit_defaults=True):
    """apps/v1 DaemonSetCondition, set only for a DaemonSet with an availability guard
    (docs/rollout-control.md). ``revision`` (not upstream) is the template hash the condition is about,
    so the guard's verdict outlives the pods that caused it."""

    type: str
    status: str
    last_transition_time: datetime | None = None
    reason: str = ""
    message: str = ""
    revision: str = ""


class DaemonSetStatus(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    desired_number_scheduled: int = 0
    current_number_scheduled: int = 0
    number_misscheduled: int = 0
    number_ready: int = 0
    number_available: int = 0
    updated_number_scheduled: int = 0
    number_unavailable: int = 0
    observed_generation: int = 0
    collision_count: int = 0
    #: empty unless the DaemonSet has an availability guard (docs/rollout-control.md)
    conditions: tuple[DaemonSetCondition, ...] = ()


class FailedPodBackoff(msgspec.Struct, frozen=True, kw_only=True):
    """The per-node backoff a decision started or advanced (docs/upstream-semantics.md A.5)."""

    # keyed by DaemonSet uid, generation and node, as upstream keys it
    node: str
    generation: int
    delay_seconds: float
    until: datetime


class DecisionRecorded(Event, frozen=True, kw_only=True):
    """One reconcile of one DaemonSet that changed something.

    ``state_seq`` is the last stream sequence folded into the state the reconcile read, and ``now`` the
    clock it used: together they make the decision recomputable (``dsctl replay verify``).
    """

    TAG: ClassVar[str] = "decision.recorded"
    namespace: str
    name: str
    uid: str
    generation: int
    now: datetime
    state_seq: int
    template_hash: str
    commands: tuple[AnyCommand, ...] = ()
    reasons: tuple[NodeReason, ...] = ()
    status: DaemonSetStatus = DaemonSetStatus()
    requeue_after_seconds: float | None = None
    backoffs: tuple[FailedPodBackoff, ...] = ()
    adopted: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    leader: str = ""
    #: the nodes a node-scoped reconcile covered (``engine.core.reconcile.reconcile_nodes``); empty for
    #: a full reconcile. A scoped decision leaves the status as it was.
    scope: tuple[str, ...] = ()


class LeaderElected(Event, frozen=True, kw_only=True):
    """An engine took the leader lease. Written on the decision subjects, so that every decision a
    deposed leader tries to append afterwards fails its expected-sequence check (fencing)."""

    TAG: ClassVar[str] = "leader.elected"
    holder: str
    epoch: int


EVENT_TYPES: tuple[type[Event], ...] = (
    NodeRegistered,
    NodeLabelsChanged,
    NodeTaintsChanged,
    NodeCordoned,
    NodeUncordoned,
    NodeConditionChanged,
    NodeRemoved,
    DaemonSetApplied,
    DaemonSetDeleted,
    PodCreated,
    PodRunning,
    PodReady,
    PodNotReady,
    PodFailed,
    PodSucceeded,
    PodTerminating,
    PodDeleted,
    PodEvicted,
    DecisionRecorded,
    LeaderElected,
)

BY_TAG: dict[str, type[Event]] = {cls.TAG: cls for cls in EVENT_TYPES}
