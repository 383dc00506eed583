"""The template a created daemon pod gets (docs/upstream-semantics.md A.6), and its name.

From the DaemonSet's template: the automatic tolerations added (add-or-update), the required node
affinity replaced by one term ``matchFields metadata.name In [<node>]`` (preferred node affinity and pod
affinity kept), and the ``controller-revision-hash`` and ``pod-template-generation`` labels (upstream
adds the second only when the DaemonSet has the deprecated annotation, which the API server always sets
on apps/v1 objects). ``nodeName`` is left as the template has it: placement is by affinity.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from engine.core.affinity import NODE_NAME_FIELD
from engine.core.pods import TEMPLATE_GENERATION_LABEL
from engine.core.tolerations import with_daemon_tolerations
from events.ids import pod_suffix
from events.k8s import REVISION_HASH_LABEL, PodTemplate, TemplateMetadata, Toleration
from projections.model import DaemonSetState

#: upstream ``maxGeneratedNameLength``: 63 minus the 5 random characters
_MAX_GENERATED_PREFIX = 58


def pod_name(ds_name: str, *suffix_parts: str | int) -> str:
    """``<ds-name>-<5 chars>``, the prefix truncated as the API server does for generateName."""
    prefix = f"{ds_name}-"[:_MAX_GENERATED_PREFIX]
    return prefix + pod_suffix(*suffix_parts)


def node_affinity_term(node: str) -> dict[str, Any]:
    return {"matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node]}]}


def pinned_to(template: PodTemplate, node: str) -> PodTemplate:
    """``template`` (made by ``daemon_pod_template`` for another node of the same DaemonSet revision)
    pinned to ``node`` instead: that pin is the only part of the pod that depends on the node. The
    rest is shared, not copied (a create decision sends up to 250 pods of one revision; a deep copy
    of the template each was the relay's largest cost after the publish)."""
    spec = dict(template.spec)
    affinity = dict(spec.get("affinity") or {})
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [node_affinity_term(node)]
    }
    affinity["nodeAffinity"] = node_affinity
    spec["affinity"] = affinity
    return PodTemplate(metadata=template.metadata, spec=spec)


def daemon_pod_template(
    ds: DaemonSetState,
    node: str,
    template: PodTemplate | None = None,
    revision_hash: str | None = None,
    generation: int | None = None,
) -> PodTemplate:
    """The pod to create on ``node``: the DaemonSet's template (or one of its revisions') with the
    automatic tolerations, the node pinned by affinity, and the revision hash label
    (docs/upstream-semantics.md A.6).
    ``generation``: the template generation the decision was made at (the DaemonSet's current one if
    None), so a create sent after a later apply still says which template it carries."""
    template = template if template is not None else ds.spec.template
    spec: dict[str, Any] = copy.deepcopy(template.spec)

    raw_tolerations = spec.get("tolerations") or []
    user = msgspec.convert(raw_tolerations, tuple[Toleration, ...], str_keys=True)
    tolerations = with_daemon_tolerations(user, bool(spec.get("hostNetwork", False)))
    spec["tolerations"] = msgspec.to_builtins(tolerations)

    affinity = dict(spec.get("affinity") or {})
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [node_affinity_term(node)]
    }
    affinity["nodeAffinity"] = node_affinity
    spec["affinity"] = affinity

    labels = {**template.metadata.labels, REVISION_HASH_LABEL: revision_hash or ds.template_hash}
    at = generation if generation is not None else ds.template_generation
    if at > 0:
        labels[TEMPLATE_GENERATION_LABEL] = str(at)
    metadata = TemplateMetadata(
        labels=labels, annotations=dict(template.metadata.annotations), name=template.metadata.name
    )
    return PodTemplate(metadata=metadata, spec=spec)
