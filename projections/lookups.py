"""Questions several readers ask of the read model, answered in one place."""

from __future__ import annotations

from projections.model import ClusterState, DaemonSetState, Revision


def owner_revision(
    state: ClusterState, owner_uid: str, revision_hash: str, namespace: str = ""
) -> tuple[DaemonSetState, Revision] | None:
    """The DaemonSet with ``owner_uid`` (live, or deleted and still collecting its pods) and its
    revision ``revision_hash``. For an orphan (no owner) with a ``namespace``: any DaemonSet there
    that had that revision (an orphaned pod's template outlives its DaemonSet's name)."""
    owners = [d for d in (*state.daemonsets.values(), *state.deleted.values()) if d.uid == owner_uid]
    if not owner_uid and namespace:
        owners = [d for d in state.daemonsets.values() if d.namespace == namespace]
    for ds in owners:
        rev = ds.revisions.get(revision_hash)
        if rev is not None:
            return ds, rev
    return None
