"""Which pods a DaemonSet controls (docs/upstream-semantics.md A.7, ``ControllerRefManager.ClaimPods``).

Owned and still matching the selector: claimed. Owned but no longer matching: released (unless the
DaemonSet is being deleted). An orphan in the same namespace that matches, is not terminating, while
the DaemonSet is not being deleted: adopted. Pods of other controllers: ignored.

Upstream re-reads the DaemonSet from the API server before adopting, to be sure it was not deleted
meanwhile; the read model is one ordered log, so the DaemonSet read here is already current.
Orphans come from the read model's index of ownerless pods by namespace, not a scan of every pod.
"""

from __future__ import annotations

import msgspec

from engine.core.selectors import matcher
from projections.model import ClusterState, DaemonSetState, PodState


class Claim(msgspec.Struct):
    #: every pod this reconcile treats as the DaemonSet's own, adopted ones included
    pods: list[PodState]
    adopted: list[PodState]
    released: list[PodState]


def claim_pods(state: ClusterState, ds: DaemonSetState) -> Claim:
    selects = matcher(ds.spec.selector)
    owned: list[PodState] = []
    released: list[PodState] = []
    for key in sorted(state.pods_by_owner.get(ds.uid, ())):
        pod = state.pods.get(key)
        if pod is None or pod.owner_uid != ds.uid:
            continue
        if ds.deleting or selects(pod.labels):
            owned.append(pod)
        else:
            released.append(pod)
    adopted: list[PodState] = []
    if not ds.deleting:
        for key in state.orphans.get(ds.namespace, ()):
            pod = state.pods[key]
            if not pod.owner_uid and pod.deletion_timestamp is None and selects(pod.labels):
                adopted.append(pod)
        adopted.sort(key=lambda p: p.key)
    return Claim(pods=owned + adopted, adopted=adopted, released=released)
