"""A demo-sized cluster with the query service beside its engine (docs/console.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.cli.served import Answers
from engine.query.service import QueryService, serve_queries
from projections.model import ClusterState
from tests.e2e.harness import Cluster, nodes_yaml, running_nodes

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
  labels: {{team: obs}}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      {extra}
      containers:
      - name: c
        image: example/{name}:{version}
"""


def _rolled(s: ClusterState) -> bool:
    want = s.daemonsets["default/agent"].template_hash
    hashes = {p.revision_hash for p in s.pods.values() if p.owner_name == "agent"}
    return hashes == {want} and running_nodes(s, "agent") == ["n2", "n3"]


@pytest.fixture
async def served_cluster(nc: Any, streams: Any) -> AsyncIterator[tuple[Cluster, QueryService]]:
    cluster = await Cluster(nc).start()
    service = await serve_queries(nc, cluster.engine.projector, Answers(cluster.store, nc).answer)  # type: ignore[union-attr,arg-type]
    try:
        await cluster.apply(
            nodes_yaml("n1", "n2", "n3", taints={"n1": "role:NoSchedule"}, labels={"n2": {"gpu": "true"}})
        )
        await cluster.apply(DS.format(name="agent", version=1, extra=""))
        await cluster.apply(DS.format(name="gpu", version=1, extra='nodeSelector: {gpu: "true"}'))
        await cluster.wait("agent on n2, n3", lambda s: running_nodes(s, "agent") == ["n2", "n3"])
        await cluster.apply(DS.format(name="agent", version=2, extra=""))
        await cluster.wait("agent rolled", _rolled)
        await cluster.wait("gpu on n2", lambda s: running_nodes(s, "gpu") == ["n2"])
        await cluster.wait("settled", lambda s: not s.in_flight)
        yield cluster, service
    finally:
        await service.stop()
        await cluster.stop()
