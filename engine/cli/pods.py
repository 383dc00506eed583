"""``dsctl delete pod``: not a fact but a request to the pod's node, as ``kubectl delete pod`` asks the
kubelet; the executor's reports then say what happened (and the DaemonSet replaces the pod)."""

from __future__ import annotations

from typing import Any, TextIO

from engine.cli.operations import find_pod, request_pod_delete
from engine.store.event_store import EventStore


async def delete_pod(store: EventStore, nc: Any, name: str, namespace: str, out: TextIO) -> int:
    pod = await find_pod(store, name, namespace)
    await request_pod_delete(nc, pod)
    print(f'pod "{name}" deleted', file=out)
    return 0
