"""``dsctl describe``: one object in detail, with an Events section read from the log.

Kubernetes keeps events in a separate, expiring store; here they are the log itself, read back on the
object's own subjects (a DaemonSet's decisions, a pod's reports, a node's facts) and shown in kubectl's
shape. The layout is ``engine.cli.present``'s; this module only reads.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, TextIO

from engine.cli import present
from engine.cli.get import Query, not_found, select
from engine.cli.present import EventRow
from engine.cli.queries import load_state
from engine.core.arguments import Kind
from engine.store.event_store import EventStore
from events.subjects import decision_subject, node_tree, pod_tree
from events.types import DecisionRecorded
from projections.model import DaemonSetState, PodState

#: what each pod report reads as in a pod's Events (type, reason, message)
_POD_REASONS = {
    "pod.running": ("Normal", "Started", "Started container"),
    "pod.ready": ("Normal", "Ready", "Pod is Ready"),
    "pod.not_ready": ("Warning", "NotReady", "Pod is not Ready"),
    "pod.failed": ("Warning", "Failed", "Pod failed"),
    "pod.succeeded": ("Normal", "Completed", "Pod completed"),
    "pod.terminating": ("Normal", "Killing", "Stopping container"),
    "pod.deleted": ("Normal", "Deleted", "Pod deleted"),
    "pod.evicted": ("Warning", "Evicted", "Pod evicted"),
}


async def describe(
    store: EventStore, nc: Any, kind: Kind, name: str, namespace: str, out: TextIO, *, at: Any = None
) -> int:
    state = await load_state(store, nc, at)
    now = state.last_time if at is not None else time.time()
    q = Query(kind=kind, name=name, namespace=namespace)
    items = select(state, q)
    if not items:
        raise not_found(q)
    item = items[0]
    if kind == "daemonsets":
        text = present.describe_daemonset(state, item, await ds_events(store, item), now)
    elif kind == "pods":
        text = present.describe_pod(state, item, await pod_events(store, item), now)
    else:
        text = present.describe_node(state, item, await node_events(store, item.name), now)
    out.write(text)
    return 0


async def ds_events(store: EventStore, ds: DaemonSetState, limit: int = 20) -> list[EventRow]:
    """(time, type, reason, message) from the DaemonSet's decisions, newest last, as kubectl events."""
    rows: list[EventRow] = []
    subject = decision_subject(ds.namespace, ds.name)
    async with contextlib.aclosing(store.read(subjects=[subject])) as events:
        async for stored in events:
            d = stored.envelope.data
            if not isinstance(d, DecisionRecorded) or d.uid != ds.uid:
                continue
            t = stored.time.timestamp()
            for reason in d.reasons:
                if reason.action == "create":
                    rows.append((t, "Normal", "SuccessfulCreate", f"Created pod: {reason.pod}"))
                elif reason.action in ("delete", "evict"):
                    kind = "Warning" if reason.code in ("FailedDaemonPod",) else "Normal"
                    why = "FailedDaemonPod" if reason.code == "FailedDaemonPod" else "SuccessfulDelete"
                    rows.append((t, kind, why, f"Deleted pod: {reason.pod} ({reason.message})"))
    return rows[-limit:]


async def pod_events(store: EventStore, pod: PodState) -> list[EventRow]:
    reasons = {
        "pod.created": (
            "Normal",
            "Scheduled",
            f"Successfully assigned {pod.namespace}/{pod.name} to {pod.node}",
        ),
        **_POD_REASONS,
    }
    rows = []
    subject = pod_tree(pod.node, pod.namespace, pod.name)
    async with contextlib.aclosing(store.read(subjects=[subject])) as events:
        async for stored in events:
            kind, reason, msg = reasons.get(stored.envelope.type, ("Normal", stored.envelope.type, ""))
            extra = getattr(stored.envelope.data, "reason", "")
            rows.append((stored.time.timestamp(), kind, reason, f"{msg}: {extra}" if extra else msg))
    return rows


async def node_events(store: EventStore, name: str) -> list[EventRow]:
    rows = []
    async with contextlib.aclosing(store.read(subjects=[node_tree(name)])) as events:
        async for stored in events:
            rows.append(
                (stored.time.timestamp(), "Normal", stored.envelope.type, f"from {stored.envelope.source}")
            )
    return rows[-20:]
