"""A demo-sized cluster with the console beside its engine, as ``dsctl up`` serves it (docs/console.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.console.server import Console, serve_console
from engine.core.status import rollout_complete
from projections.model import ClusterState
from tests.e2e.harness import Cluster, nodes_yaml, running_nodes

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{sim.dsctl.io/ready-after: "{ready_after}"}}
    spec:
      {extra}
      containers:
      - name: c
        image: example/{name}:{version}
"""

ZONES = {f"n{i}": {"topology.kubernetes.io/zone": f"zone-{i % 2}"} for i in range(1, 7)}


def ds(name: str, version: int, *, extra: str = "", ready_after: float = 0) -> str:
    return DS.format(name=name, version=version, extra=extra, ready_after=ready_after)


def converged(name: str, count: int) -> Any:
    def check(s: ClusterState) -> bool:
        d = s.daemonsets.get(f"default/{name}")
        if d is None:
            return False
        pods = [p for p in s.pods.values() if p.owner_name == name and p.deletion_timestamp is None]
        current = all(p.revision_hash == d.template_hash for p in pods)
        return len(running_nodes(s, name)) == count and current and rollout_complete(d, d.status)

    return check


@pytest.fixture
async def console_cluster(nc: Any, streams: Any) -> AsyncIterator[tuple[Cluster, Console]]:
    cluster = await Cluster(nc).start()
    assert cluster.engine is not None and cluster.engine.projector is not None
    console = await serve_console(cluster.store, cluster.engine.projector)
    try:
        labels = dict(ZONES)
        labels["n2"] = {**labels["n2"], "gpu": "true"}
        await cluster.apply(nodes_yaml(*ZONES, labels=labels, taints={"n1": "role:NoSchedule"}))
        await cluster.apply(ds("agent", 1))
        await cluster.apply(ds("gpu", 1, extra='nodeSelector: {gpu: "true"}'))
        await cluster.wait("agent on 5 nodes", converged("agent", 5))
        await cluster.wait("gpu on n2", converged("gpu", 1))
        yield cluster, console
    finally:
        await console.stop()
        await cluster.stop()
