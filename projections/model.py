"""The read model: what the log says is true, after folding every event up to ``ClusterState.seq``.

Structs here are mutable on purpose: the fold (``projections.fold.apply``) updates the state in place,
because copying a 100,000-pod model per event would make rebuilds quadratic. The fold owns the state it
is given; callers that need an older state keep a snapshot (``projections.snapshot``) or replay.

Times are float seconds since the epoch (UTC): cheap to compare and to add ``minReadySeconds`` to.
Keys: a DaemonSet or pod is keyed ``"<namespace>/<name>"``; a node by its name.

The per-object structs (nodes, pods, commands in flight, backoffs) hold only strings, numbers and
containers of those, never a reference back, so the cyclic GC does not track them (``gc=False``):
at 100,000 pods it would otherwise walk them in every full collection, and every one allocated would
count toward the next young one (docs/benchmarks.md, ``fold``).
"""

from __future__ import annotations

import msgspec

from events.k8s import DaemonSetSpec, NodeCondition, PodTemplate, PropagationPolicy, Taint
from events.types import DaemonSetStatus

Timestamp = float


def object_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class NodeState(msgspec.Struct, kw_only=True, gc=False):
    name: str
    labels: dict[str, str] = {}
    taints: list[Taint] = []
    unschedulable: bool = False
    conditions: dict[str, NodeCondition] = {}
    capacity: dict[str, str] = {}
    created_at: Timestamp = 0.0
    updated_seq: int = 0


class Revision(msgspec.Struct, kw_only=True):
    """A ControllerRevision: one template the DaemonSet has had, numbered in order of (re)use."""

    hash: str
    number: int
    template: PodTemplate
    change_cause: str = ""
    created_at: Timestamp = 0.0
    #: the DaemonSet's template generation when this template last became current (0: unknown)
    template_generation: int = 0


class Backoff(msgspec.Struct, kw_only=True, gc=False):
    """Failed-pod backoff for one node (docs/upstream-semantics.md A.5): keyed by node, reset when the
    generation changes."""

    generation: int
    delay_seconds: float
    until: Timestamp


class DaemonSetState(msgspec.Struct, kw_only=True):
    namespace: str
    name: str
    uid: str
    generation: int
    spec: DaemonSetSpec
    template_hash: str
    #: upstream's template generation (the ``deprecated.daemonset.template.generation`` annotation the
    #: API server keeps): 1 on create, +1 only when the pod template changes (a spec change elsewhere
    #: bumps ``generation`` alone). New pods carry it as their ``pod-template-generation`` label.
    #: 0 in a snapshot written before it was kept: unknown until the next apply.
    template_generation: int = 0
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    created_at: Timestamp = 0.0
    applied_seq: int = 0
    #: set when a foreground delete is waiting for the pods to go (docs/upstream-semantics.md A.12)
    deleting: bool = False
    deletion_policy: PropagationPolicy | None = None
    #: when the delete was recorded (the object's deletionTimestamp while a cascade runs)
    deleted_at: Timestamp | None = None
    #: every revision ever used, keyed by hash; retention (revisionHistoryLimit) is a view in the core
    revisions: dict[str, Revision] = {}
    observed_generation: int = 0
    #: the status the last recorded decision computed (so a reconcile can tell "nothing changed")
    status: DaemonSetStatus = DaemonSetStatus()
    collision_count: int = 0
    backoffs: dict[str, Backoff] = {}
    last_decision_seq: int = 0

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)


class PodState(msgspec.Struct, kw_only=True, gc=False):
    namespace: str
    name: str
    uid: str
    node: str
    #: uid and name of the controlling DaemonSet; empty for an orphan
    owner_uid: str = ""
    owner_name: str = ""
    revision_hash: str = ""
    labels: dict[str, str] = {}
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed
    ready: bool = False
    #: when the Ready condition last became True (for minReadySeconds), else None
    ready_since: Timestamp | None = None
    created_at: Timestamp = 0.0
    #: the deletionTimestamp: set while the pod is terminating
    deletion_timestamp: Timestamp | None = None
    created_seq: int = 0
    command_id: str = ""

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


class InFlight(msgspec.Struct, kw_only=True, gc=False):
    """A command sent but not yet answered by a pod report (the event-sourced "expectations",
    docs/upstream-semantics.md A.8)."""

    command_id: str
    kind: str  # create_pod | delete_pod | evict_pod
    ds_key: str
    node: str
    namespace: str
    pod_name: str
    issued_at: Timestamp
    decision_seq: int


class Authority(msgspec.Struct, kw_only=True):
    """Who may write on the decision tree, as the log has shown it so far (``projections.authority``).

    ``holder``/``epoch``/``marker_seq``: the latest leader marker (empty before the first one). ``head``:
    the sequence of the last record taken from the tree, the one the leader's next decision must be
    fenced on. ``refused``: records on the tree (or of its types) that were not taken."""

    holder: str = ""
    epoch: int = 0
    marker_seq: int = 0
    head: int = 0
    refused: int = 0


class ClusterState(msgspec.Struct, kw_only=True):
    """Everything the engine knows at stream sequence ``seq``."""

    seq: int = 0
    #: the envelope id of the event at ``seq``: a snapshot names the record it ends with, so a reader
    #: can tell that the stream it resumes on is still the one the snapshot was folded from
    last_id: str = ""
    #: the decision tree's writer as the log shows it (docs/design.md, "Tamper evidence")
    authority: Authority = msgspec.field(default_factory=Authority)
    #: the occurred_at of the last folded event (the log's own clock, used by replays)
    last_time: Timestamp = 0.0
    nodes: dict[str, NodeState] = {}
    daemonsets: dict[str, DaemonSetState] = {}
    #: DaemonSets deleted with a background cascade whose pods still exist, by uid: the reconciler
    #: plays the garbage collector and deletes those pods (docs/upstream-semantics.md A.12); the entry goes
    #: with the last pod
    deleted: dict[str, DaemonSetState] = {}
    pods: dict[str, PodState] = {}
    in_flight: dict[str, InFlight] = {}
    # --- indexes, maintained by the fold, so a reconcile never scans the whole fleet ---
    #: node name -> keys of pods on that node
    pods_by_node: dict[str, set[str]] = {}
    #: DaemonSet uid -> keys of the pods it owns
    pods_by_owner: dict[str, set[str]] = {}
    #: DaemonSet key -> ids of its commands in flight
    in_flight_by_ds: dict[str, set[str]] = {}
    #: namespace -> keys of the pods there without an owner (candidates for adoption,
    #: docs/upstream-semantics.md A.7)
    orphans: dict[str, set[str]] = {}
    #: pod key -> ids of commands in flight for that pod
    in_flight_by_pod: dict[str, set[str]] = {}
