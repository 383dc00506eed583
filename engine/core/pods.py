"""Facts about one daemon pod that several phases share: order, revision, readiness, availability.

Upstream sorts a node's pods scheduled-first (``spec.nodeName`` set), then oldest, then by name. Every pod
in the read model is bound to the node whose executor reported it, so only a pod without a node (never
expected) sorts last; otherwise the order is creation time, then name.
"""

from __future__ import annotations

from events.k8s import REVISION_HASH_LABEL
from projections.model import DaemonSetState, PodState

#: the deprecated DaemonSet annotation and pod label upstream still honours when deciding "updated"
#: (the annotation's value is the read model's ``template_generation``, as the API server keeps it)
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"


def template_generation(ds: DaemonSetState) -> str | None:
    """The value new pods carry as ``pod-template-generation`` (None while unknown: an old snapshot)."""
    return str(ds.template_generation) if ds.template_generation > 0 else None


def sort_key(pod: PodState) -> tuple[bool, float, str]:
    return (not pod.node, pod.created_at, pod.name)


def revision_of(pod: PodState) -> str:
    return pod.revision_hash or pod.labels.get(REVISION_HASH_LABEL, "")


def is_updated(pod: PodState, ds: DaemonSetState) -> bool:
    """``IsPodUpdated``: the pod carries the current hash, or the legacy template generation.

    Departure: the legacy generation match counts only for a pod with no revision hash at all (the
    pre-hash pods it exists for). Upstream ORs the two, so a DaemonSet deleted with ``orphan`` and
    re-created with another template (template generation 1 again) would take the orphans' label
    ``pod-template-generation=1`` for "updated" and never roll them, although their hash says otherwise.
    """
    revision = revision_of(pod)
    if revision == ds.template_hash:
        return True
    generation = template_generation(ds)
    return not revision and generation is not None and pod.labels.get(TEMPLATE_GENERATION_LABEL) == generation


def is_available(pod: PodState, min_ready_seconds: int, now: float) -> bool:
    """``IsPodAvailable``: Ready, and Ready for strictly longer than minReadySeconds."""
    if not pod.ready:
        return False
    if min_ready_seconds == 0:
        return True
    return pod.ready_since is not None and pod.ready_since + min_ready_seconds < now


def seconds_until_available(pod: PodState, min_ready_seconds: int, now: float) -> float | None:
    """For a Ready pod still inside minReadySeconds: when to look again (upstream adds one second)."""
    if not pod.ready or min_ready_seconds == 0 or pod.ready_since is None:
        return None
    if is_available(pod, min_ready_seconds, now):
        return None
    return max(0.0, pod.ready_since + min_ready_seconds - now) + 1.0


def is_deleting(pod: PodState) -> bool:
    return pod.deletion_timestamp is not None
