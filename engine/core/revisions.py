"""Revision history views (docs/upstream-semantics.md A.10): what ``revisionHistoryLimit`` keeps, and
rollback.

The read model keeps every revision ever used (keyed by template hash, numbered in order of use, an
old template re-applied being renumbered: revisions only roll forward). Upstream deletes surplus
ControllerRevisions in ``cleanupHistory``; here retention is a view, so history is never lost from the
log, and ``dsctl rollout history`` shows what upstream would still have.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.core.pods import revision_of
from events.errors import NotFound
from events.k8s import PodTemplate
from projections.model import DaemonSetState, PodState, Revision


def retained_revisions(ds: DaemonSetState, pods: Iterable[PodState]) -> list[Revision]:
    """The current revision, plus old ones trimmed lowest-number first down to revisionHistoryLimit,
    never trimming one whose hash a live pod still carries (terminal and deleting pods count too)."""
    live_hashes = {revision_of(p) for p in pods}
    old = sorted((r for r in ds.revisions.values() if r.hash != ds.template_hash), key=lambda r: r.number)
    surplus = len(old) - ds.spec.revision_history_limit
    kept: list[Revision] = []
    for rev in old:
        if surplus > 0 and rev.hash not in live_hashes:
            surplus -= 1
            continue
        kept.append(rev)
    current = ds.revisions.get(ds.template_hash)
    if current is not None:
        kept.append(current)
    return sorted(kept, key=lambda r: r.number)


def revision_by_number(ds: DaemonSetState, number: int) -> Revision:
    for rev in ds.revisions.values():
        if rev.number == number:
            return rev
    raise NotFound(f"daemonset {ds.key} has no revision {number}")


def rollback_template(ds: DaemonSetState, to_revision: int = 0) -> PodTemplate:
    """The template ``kubectl rollout undo --to-revision=N`` would apply (0: the previous revision).

    Applying it makes a new DaemonSet generation whose revision is renumbered above every other: the
    rollback rolls forward.
    """
    if to_revision:
        return revision_by_number(ds, to_revision).template
    older = [r for r in ds.revisions.values() if r.hash != ds.template_hash]
    if not older:
        raise NotFound(f"daemonset {ds.key} has no previous revision to roll back to")
    return max(older, key=lambda r: r.number).template
