"""Kubernetes manifests in, typed objects out: apps/v1 DaemonSets and v1 Nodes.

``parse_manifests(text)`` reads YAML or JSON (``documents``), defaults (``defaults``) and validates
(``daemonset_validation``) each object, and raises ``ManifestInvalid`` listing every problem of the first
invalid object. ``apply_daemonset`` turns a parsed DaemonSet into the ``daemonset.applied`` fact the API
server would have stored: generation 1 on create, +1 when the spec changes; the selector is immutable.

OpenKruise Advanced DaemonSets (``apps.kruise.io/v1alpha1`` and ``v1beta1``) are accepted too and read
as the apps/v1 DaemonSet they extend, with their rollout controls (docs/rollout-control.md): migrating
to or from them is a change of apiVersion only, as OpenKruise promises.

Departures: only apps/v1 DaemonSets are accepted (extensions/v1beta1 and apps/v1beta2 are long gone);
``uid`` comes from the caller, since the core generates nothing; ``templateGeneration`` is accepted and
ignored.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from engine.core import names
from engine.core.daemonset_validation import check_labels, check_metadata, check_name, check_spec
from engine.core.defaults import with_daemonset_defaults
from engine.core.documents import load_documents
from engine.core.tolerations import TAINT_EFFECTS
from engine.core.validation import Checker, FieldError, ManifestInvalid, join
from events.k8s import DaemonSetSpec, NodeAddress, NodeCondition, Taint
from events.template_hash import template_hash
from events.types import DaemonSetApplied, NodeRegistered
from projections.model import DaemonSetState

ApplyResult = Literal["created", "configured", "unchanged"]
#: the apiVersions a DaemonSet manifest may have: apps/v1 and OpenKruise's Advanced DaemonSet
DAEMONSET_API_VERSIONS = ("apps/v1", "apps.kruise.io/v1alpha1", "apps.kruise.io/v1beta1")


class DaemonSetManifest(msgspec.Struct, frozen=True, kw_only=True):
    """A valid, defaulted apps/v1 DaemonSet as the user wrote it (no uid or generation yet)."""

    namespace: str
    name: str
    spec: DaemonSetSpec
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class ApplyOutcome(msgspec.Struct, frozen=True):
    event: DaemonSetApplied
    result: ApplyResult


Manifest = DaemonSetManifest | NodeRegistered


def parse_manifests(text: str) -> list[Manifest]:
    return [parse_object(doc, i) for i, doc in enumerate(load_documents(text))]


def parse_object(doc: dict[str, Any], document: int = 0) -> Manifest:
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind == "DaemonSet":
        return parse_daemonset(doc, document)
    if kind == "Node":
        return parse_node(doc, document)
    what = f"{api_version}/{kind}" if api_version else str(kind)
    error = FieldError(
        "kind",
        f'Unsupported value: "{what}": supported values: "apps/v1 DaemonSet", '
        '"apps.kruise.io/v1alpha1 DaemonSet", "apps.kruise.io/v1beta1 DaemonSet", "v1 Node"',
    )
    raise ManifestInvalid([error], kind=str(kind or ""), name=_name_of(doc), document=document)


def _name_of(doc: dict[str, Any]) -> str:
    metadata = doc.get("metadata")
    return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""


def parse_daemonset(doc: dict[str, Any], document: int = 0) -> DaemonSetManifest:
    c = Checker()
    if doc.get("apiVersion") not in DAEMONSET_API_VERSIONS:
        c.unsupported("apiVersion", doc.get("apiVersion"), DAEMONSET_API_VERSIONS)
    defaulted = with_daemonset_defaults(doc)
    metadata = check_metadata(c, defaulted.get("metadata"))
    spec = check_spec(c, defaulted.get("spec"))
    c.raise_if_any(kind="DaemonSet", name=_name_of(doc), document=document)
    try:
        typed = msgspec.convert(spec, DaemonSetSpec)
    except msgspec.ValidationError as error:
        raise ManifestInvalid(
            [FieldError("spec", str(error))], kind="DaemonSet", document=document
        ) from error
    return DaemonSetManifest(
        namespace=metadata["namespace"],
        name=metadata["name"],
        spec=typed,
        labels=metadata["labels"],
        annotations=metadata["annotations"],
    )


def parse_node(doc: dict[str, Any], document: int = 0) -> NodeRegistered:
    c = Checker()
    if doc.get("apiVersion") != "v1":
        c.unsupported("apiVersion", doc.get("apiVersion"), ("v1",))
    metadata = c.mapping(doc.get("metadata"), "metadata", required=True)
    name = c.string(metadata.get("name"), "metadata.name", required=True)
    if name:
        check_name(c, name, "metadata.name")
    labels = check_labels(c, metadata.get("labels"), "metadata.labels")
    spec = c.mapping(doc.get("spec"), "spec")
    taints = _check_taints(c, spec.get("taints"), "spec.taints")
    unschedulable = c.boolean(spec.get("unschedulable"), "spec.unschedulable")
    status = c.mapping(doc.get("status"), "status")
    conditions = []
    for i, item in enumerate(c.sequence(status.get("conditions"), "status.conditions")):
        p = join("status.conditions", i)
        cond = c.mapping(item, p)
        conditions.append(
            NodeCondition(
                type=c.string(cond.get("type"), join(p, "type"), required=True),
                status=c.string(cond.get("status"), join(p, "status"), required=True),
                reason=c.string(cond.get("reason"), join(p, "reason")),
                message=c.string(cond.get("message"), join(p, "message")),
                last_transition_time=c.string(cond.get("lastTransitionTime"), join(p, "lastTransitionTime"))
                or None,
            )
        )
    capacity = c.string_map(status.get("capacity"), "status.capacity")
    addresses = []
    for i, item in enumerate(c.sequence(status.get("addresses"), "status.addresses")):
        p = join("status.addresses", i)
        entry = c.mapping(item, p)
        addresses.append(
            NodeAddress(
                type=c.string(entry.get("type"), join(p, "type"), required=True),
                address=c.string(entry.get("address"), join(p, "address"), required=True),
            )
        )
    c.raise_if_any(kind="Node", name=name, document=document)
    return NodeRegistered(
        name=name,
        labels=labels,
        taints=tuple(taints),
        unschedulable=unschedulable,
        conditions=tuple(conditions),
        capacity=capacity,
        addresses=tuple(addresses),
    )


def _check_taints(c: Checker, raw: Any, path: str) -> list[Taint]:
    taints = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(c.sequence(raw, path)):
        p = join(path, i)
        entry = c.mapping(item, p)
        key = c.string(entry.get("key"), join(p, "key"), required=True)
        value = c.string(entry.get("value"), join(p, "value"))
        effect = c.string(entry.get("effect"), join(p, "effect"), required=True)
        for problem in names.qualified_name(key) if key else []:
            c.invalid(join(p, "key"), key, problem)
        for problem in names.label_value(value):
            c.invalid(join(p, "value"), value, problem)
        if effect and effect not in TAINT_EFFECTS:
            c.unsupported(join(p, "effect"), effect, TAINT_EFFECTS)
        if (key, effect) in seen:
            c.add(p, f'Duplicate value: "{key}:{effect}": taints must be unique by key and effect pair')
        seen.add((key, effect))
        added = entry.get("timeAdded")
        taints.append(Taint(key=key, value=value, effect=effect, time_added=str(added) if added else None))
    return taints


def apply_daemonset(manifest: DaemonSetManifest, existing: DaemonSetState | None, uid: str) -> ApplyOutcome:
    """The ``daemonset.applied`` event for ``manifest`` over ``existing`` (same key, or None).

    ``uid`` names a new object; an existing one keeps its own. Raises ``ManifestInvalid`` if the
    selector changed (immutable in apps/v1).
    """
    if existing is not None and existing.spec.selector != manifest.spec.selector:
        error = FieldError("spec.selector", "Invalid value: field is immutable")
        raise ManifestInvalid([error], kind="DaemonSet", name=manifest.name)
    collision_count = existing.collision_count if existing is not None else 0
    event_hash = template_hash(manifest.spec.template, collision_count)
    result: ApplyResult
    if existing is None:
        generation, result = 1, "created"
    elif existing.spec == manifest.spec:
        same_meta = existing.labels == manifest.labels and existing.annotations == manifest.annotations
        generation, result = existing.generation, "unchanged" if same_meta else "configured"
    else:
        generation, result = existing.generation + 1, "configured"
    event = DaemonSetApplied(
        namespace=manifest.namespace,
        name=manifest.name,
        uid=existing.uid if existing is not None else uid,
        generation=generation,
        spec=manifest.spec,
        template_hash=event_hash,
        labels=dict(manifest.labels),
        annotations=dict(manifest.annotations),
    )
    return ApplyOutcome(event=event, result=result)
