"""Request bodies for the ingest tests: valid ones of each kind, and a daemonset.applied built the way
``dsctl apply`` builds it (so its spec is exactly what the engine would accept)."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from engine.core.manifests import apply_daemonset, parse_daemonset
from events.types import DaemonSetApplied

DAEMONSET = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {"name": "agent", "namespace": "kube-system"},
    "spec": {
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]},
        },
    },
}


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def node_registered(name: str = "node-1", **fields: Any) -> dict[str, Any]:
    return {"type": "node.registered", "data": {"name": name, "labels": {"zone": "a"}, **fields}}


def daemonset_applied() -> dict[str, Any]:
    event = apply_daemonset(parse_daemonset(DAEMONSET), None, uid="uid-1").event
    assert isinstance(event, DaemonSetApplied)
    return {"type": event.TAG, "data": msgspec.to_builtins(event)}


def pod_ready(node: str = "node-1", name: str = "agent-abcde") -> dict[str, Any]:
    return {"type": "pod.ready", "data": {"namespace": "kube-system", "name": name, "node": node}}
