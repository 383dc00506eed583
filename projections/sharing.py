"""Values many pods hold alike (a namespace, a node's name, an owner, a revision, a label set), held once.

Every decoded event brings its own copies of these strings and of its label dict; kept per pod, they
are most of a pod's memory (about 120 MB for 100,000 pods without sharing, docs/benchmarks.md,
``memory``). Shared, they cost nothing per pod. A shared label dict is never changed in place: the fold
replaces ``PodState.labels``, and every reader only reads it.

The memo is process-wide and only ever holds values equal to those it is asked for, so a state folded
with it is the same (``==``, and the same snapshot bytes) as one folded without.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from projections.model import PodState

#: distinct label sets kept (a fleet has one per DaemonSet revision); past it the memo starts over, so
#: a log of pods with labels of their own cannot grow it without end
MAX_LABEL_SETS = 4096

_label_sets: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

shared_text = sys.intern


def shared_labels(given: Mapping[str, str]) -> dict[str, str]:
    """A dict equal to ``given``, the same object for every equal label set (in the same order)."""
    if not given:
        return {}
    key = tuple(given.items())
    found = _label_sets.get(key)
    if found is None:
        if len(_label_sets) >= MAX_LABEL_SETS:
            _label_sets.clear()
        found = _label_sets[key] = dict(given)
    return found


def share_pod(pod: PodState) -> None:
    """Point a pod decoded on its own (from a snapshot) at the shared values."""
    pod.namespace = sys.intern(pod.namespace)
    pod.node = sys.intern(pod.node)
    pod.owner_uid = sys.intern(pod.owner_uid)
    pod.owner_name = sys.intern(pod.owner_name)
    pod.revision_hash = sys.intern(pod.revision_hash)
    pod.labels = shared_labels(pod.labels)
