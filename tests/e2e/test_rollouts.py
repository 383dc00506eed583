"""Rolling updates end to end: the budget holds at every folded event, and a broken template stalls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from projections.model import ClusterState
from tests.e2e.harness import Cluster, nodes_yaml, pods_of

pytestmark = pytest.mark.integration

NODES = [f"node{i}" for i in range(1, 6)]

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {{app: agent}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
{strategy}
  template:
    metadata:
      labels: {{app: agent}}
      annotations:
{annotations}
    spec:
      containers:
      - name: agent
        image: example/agent:{version}
"""


def ds(version: str, *, never_ready: bool = False, surge: bool = False) -> str:
    strategy = "      maxSurge: 1\n      maxUnavailable: 0" if surge else "      maxUnavailable: 1"
    annotations = '        sim.dsctl.io/never-ready: "true"' if never_ready else "        note: plain"
    return DS.format(version=version, strategy=strategy, annotations=annotations)


def unavailable_nodes(state: ClusterState) -> int:
    """Desired nodes without a ready, non-terminating pod of the DaemonSet."""
    ready = {p.node for p in pods_of(state, "agent") if p.ready and p.deletion_timestamp is None}
    return sum(1 for n in state.nodes if n not in ready)


def pods_per_node(state: ClusterState) -> int:
    counts: dict[str, int] = {}
    for p in pods_of(state, "agent"):
        counts[p.node] = counts.get(p.node, 0) + 1
    return max(counts.values(), default=0)


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await Cluster(nc).start()
    try:
        await c.apply(nodes_yaml(*NODES))
        await c.apply(ds("1"))
        await c.wait("v1 everywhere", lambda s: unavailable_nodes(s) == 0 and len(pods_of(s, "agent")) == 5)
        yield c
    finally:
        await c.stop()


def all_on(state: ClusterState, revision: str) -> bool:
    pods = pods_of(state, "agent")
    return len(pods) == len(NODES) and all(p.revision_hash == revision and p.ready for p in pods)


async def test_a_template_change_rolls_every_node_never_more_than_one_unavailable(cluster: Cluster) -> None:
    seen: list[int] = []
    cluster.observers.append(lambda s: seen.append(unavailable_nodes(s)))
    await cluster.apply(ds("2"))
    new_hash = cluster.state.daemonsets["default/agent"].template_hash
    await cluster.wait("v2 everywhere", lambda s: all_on(s, new_hash))
    assert max(seen) == 1, "the rollout never took a node down (or took more than one)"
    assert seen.count(1) >= len(NODES)  # each node was replaced once
    status = cluster.state.daemonsets["default/agent"].status
    await cluster.wait(
        "status caught up", lambda s: s.daemonsets["default/agent"].status.updated_number_scheduled == 5
    )
    assert status.desired_number_scheduled == 5


async def test_a_never_ready_template_stalls_after_one_node_as_upstream(cluster: Cluster) -> None:
    await cluster.apply(ds("3", never_ready=True))
    bad = cluster.state.daemonsets["default/agent"].template_hash
    await cluster.wait(
        "one node on the bad revision", lambda s: any(p.revision_hash == bad for p in pods_of(s, "agent"))
    )
    await asyncio.sleep(1.5)  # give the controller every chance to go further
    pods = pods_of(cluster.state, "agent")
    on_bad = [p for p in pods if p.revision_hash == bad]
    assert len(on_bad) == 1 and not on_bad[0].ready
    assert sum(1 for p in pods if p.ready) == 4
    status = cluster.state.daemonsets["default/agent"].status
    assert (status.updated_number_scheduled, status.number_unavailable) == (1, 1)


async def test_max_surge_creates_the_new_pod_before_deleting_the_old(cluster: Cluster) -> None:
    seen_unavailable: list[int] = []
    seen_per_node: list[int] = []
    cluster.observers.append(lambda s: seen_unavailable.append(unavailable_nodes(s)))
    cluster.observers.append(lambda s: seen_per_node.append(pods_per_node(s)))
    await cluster.apply(ds("4", surge=True))
    new_hash = cluster.state.daemonsets["default/agent"].template_hash
    await cluster.wait("v4 everywhere", lambda s: all_on(s, new_hash))
    assert max(seen_unavailable) == 0, "a surge rollout must keep every node available"
    assert max(seen_per_node) == 2, "a surge rollout runs old and new side by side"


async def test_pods_carry_the_template_generation_they_run_and_a_spec_only_change_keeps_it(
    cluster: Cluster,
) -> None:
    def labels(state: ClusterState) -> set[str | None]:
        return {p.labels.get("pod-template-generation") for p in pods_of(state, "agent")}

    assert labels(cluster.state) == {"1"}
    await cluster.apply(ds("1").replace("spec:\n  selector", "spec:\n  minReadySeconds: 0\n  selector", 1))
    ds_state = cluster.state.daemonsets["default/agent"]
    assert (ds_state.generation, ds_state.template_generation) == (1, 1)  # same spec: unchanged
    await cluster.apply(ds("1").replace("spec:\n  selector", "spec:\n  minReadySeconds: 1\n  selector", 1))
    assert cluster.state.daemonsets["default/agent"].template_generation == 1  # not a template change
    revision = cluster.state.daemonsets["default/agent"].template_hash
    await cluster.apply(ds("2"))
    new = cluster.state.daemonsets["default/agent"]
    assert new.template_generation == 2 and new.template_hash != revision
    await cluster.wait("v2 everywhere", lambda s: all_on(s, new.template_hash), timeout=30)
    assert labels(cluster.state) == {"2"}
