"""Kubernetes object shapes the engine interprets, as msgspec Structs.

Field names are camelCase on the wire (``rename="camel"``) so a manifest's JSON decodes into these types
as it is, and ``-o json`` output stays Kubernetes-shaped. The pod template's ``spec`` is kept as a raw
mapping: the engine only interprets its scheduling fields (see ``SchedulingSpec``), and a user's template
must come back out exactly as it went in (hashing, ``rollout history``, ``-o yaml``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
PropagationPolicy = Literal["Background", "Foreground", "Orphan"]

#: the label the controller stamps on every pod and revision (docs/upstream-semantics.md A.10)
REVISION_HASH_LABEL = "controller-revision-hash"
#: carried from the DaemonSet's annotations into its revision history (docs/upstream-semantics.md A.10)
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"


class LabelSelectorRequirement(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    key: str
    operator: str
    values: tuple[str, ...] = ()


class LabelSelector(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    match_labels: dict[str, str] = {}
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


class Taint(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    key: str
    effect: str
    value: str = ""
    time_added: str | None = None


class Toleration(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


class NodeSelectorRequirement(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    key: str
    operator: str
    values: tuple[str, ...] = ()


class NodeSelectorTerm(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    match_expressions: tuple[NodeSelectorRequirement, ...] = ()
    match_fields: tuple[NodeSelectorRequirement, ...] = ()


class NodeCondition(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


class NodeAddress(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """A Node's ``status.addresses`` entry (InternalIP, ExternalIP, Hostname, ...): where its daemon
    pods' host ports are reached (``dsctl get endpoints``, docs/rollout-control.md)."""

    type: str
    address: str


class TemplateMetadata(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    name: str | None = None


class PodTemplate(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """``spec.template``: metadata typed, pod spec raw (defaults already applied)."""

    metadata: TemplateMetadata = TemplateMetadata()
    spec: dict[str, Any] = {}


class RollingUpdate(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """apps/v1 ``rollingUpdate`` plus the rollout controls of docs/rollout-control.md (OpenKruise's
    field names): ``partition`` nodes kept on the old revision, ``paused``, and a node ``selector``
    narrowing which nodes may be updated. All default to "absent", so an apps/v1 spec encodes as before."""

    max_unavailable: int | str | None = None
    max_surge: int | str | None = None
    partition: int | str | None = None
    paused: bool = False
    selector: LabelSelector | None = None


class UpdateStrategy(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    type: str = "RollingUpdate"
    rolling_update: RollingUpdate | None = None


class RolloutGuard(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The availability guard (docs/rollout-control.md): the rollout pauses itself once
    ``failure_threshold`` new-revision pods failed or were not Ready within progressDeadlineSeconds;
    with ``auto_revert`` it also rolls back to the last revision that was fully available."""

    failure_threshold: int | str = 1
    auto_revert: bool = False


class DaemonSetSpec(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """apps/v1 DaemonSetSpec after defaulting (with the additive rollout controls of
    docs/rollout-control.md: absent unless set)."""

    template: PodTemplate
    selector: LabelSelector | None = None
    update_strategy: UpdateStrategy = UpdateStrategy()
    min_ready_seconds: int = 0
    revision_history_limit: int = 10
    progress_deadline_seconds: int | None = None
    rollout_guard: RolloutGuard | None = None


class NodeAffinity(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None


class NodeSelector(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    node_selector_terms: tuple[NodeSelectorTerm, ...] = ()


class Affinity(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    node_affinity: NodeAffinity | None = None


class SchedulingSpec(msgspec.Struct, frozen=True, rename="camel"):
    """The part of a pod spec that decides placement; read out of the raw template spec.

    Unknown fields are ignored by ``msgspec.convert``, so any valid pod spec converts.
    """

    node_name: str = ""
    node_selector: dict[str, str] = {}
    affinity: Affinity | None = None
    tolerations: tuple[Toleration, ...] = ()
    host_network: bool = False
    restart_policy: str = "Always"
    termination_grace_period_seconds: int = 30


def scheduling_spec(template: PodTemplate) -> SchedulingSpec:
    """Typed view of a template's scheduling fields (raises msgspec.ValidationError on a bad shape)."""
    return msgspec.convert(template.spec, SchedulingSpec, str_keys=True)
