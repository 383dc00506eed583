"""The seed walkthroughs, end to end through a real nats-server: manifests applied, the engine
deciding, the simulated executor reporting back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events.k8s import Taint
from tests.e2e.harness import Cluster, nodes_yaml, pods_of, running_nodes

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "ops" / "demo"


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await Cluster(nc).start()
    try:
        yield c
    finally:
        await c.stop()


async def test_seed_001_one_pod_per_node_follows_nodes_and_replaces_a_deleted_pod(cluster: Cluster) -> None:
    await cluster.apply(nodes_yaml("node1", "node2", "node3"))
    assert await cluster.apply((DEMO / "002-myweb-ds.yaml").read_text()) == [
        "daemonset.apps/myweb-ds created"
    ]
    await cluster.wait(
        "3 pods, one per node", lambda s: running_nodes(s, "myweb-ds") == ["node1", "node2", "node3"]
    )
    assert len(pods_of(cluster.state, "myweb-ds")) == 3

    await cluster.nodes.remove("node3")
    await cluster.wait("2 pods after node3 left", lambda s: len(pods_of(s, "myweb-ds")) == 2)
    await cluster.wait("status counts 2", lambda s: s.daemonsets["default/myweb-ds"].status.number_ready == 2)

    await cluster.apply(nodes_yaml("node3"))
    await cluster.wait("node3 back", lambda s: running_nodes(s, "myweb-ds") == ["node1", "node2", "node3"])

    victim = pods_of(cluster.state, "myweb-ds")[0]
    await cluster.delete_pod(victim.name)
    await cluster.wait(
        "a replacement pod on the victim's node",
        lambda s: victim.key not in s.pods and victim.node in running_nodes(s, "myweb-ds"),
    )
    assert len(pods_of(cluster.state, "myweb-ds")) == 3


async def test_seed_002_tolerating_daemonset_lands_on_the_tainted_master(cluster: Cluster) -> None:
    await cluster.apply((DEMO / "000-nodes.yaml").read_text())
    await cluster.apply((DEMO / "003-fluentd-elasticsearch.yaml").read_text())
    await cluster.apply((DEMO / "002-myweb-ds.yaml").read_text())
    await cluster.wait(
        "fluentd-elasticsearch on every node, master included",
        lambda s: running_nodes(s, "fluentd-elasticsearch", "kube-system") == ["node1", "node2", "node3"],
    )
    await cluster.wait(
        "myweb-ds only on the workers", lambda s: running_nodes(s, "myweb-ds") == ["node2", "node3"]
    )
    assert cluster.state.daemonsets["default/myweb-ds"].status.desired_number_scheduled == 2


GPU_DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: gpu-agent
spec:
  selector:
    matchLabels: {app: gpu-agent}
  template:
    metadata:
      labels: {app: gpu-agent}
    spec:
      nodeSelector:
        gpu: "true"
      containers:
      - name: agent
        image: example/gpu-agent:1
"""


async def test_seed_003_labelling_a_node_adds_a_pod_and_unlabelling_removes_it(cluster: Cluster) -> None:
    await cluster.apply(nodes_yaml("node1", "node2"))
    await cluster.apply(GPU_DS)
    await cluster.wait(
        "status reports nothing desired",
        lambda s: s.daemonsets["default/gpu-agent"].status.observed_generation == 1,
    )
    assert pods_of(cluster.state, "gpu-agent") == []

    assert await cluster.nodes.label("node2", {"gpu": "true"})
    await cluster.wait("a pod on the labelled node", lambda s: running_nodes(s, "gpu-agent") == ["node2"])

    assert await cluster.nodes.label("node2", {}, ["gpu"])
    await cluster.wait("the pod leaves with the label", lambda s: pods_of(s, "gpu-agent") == [])


async def test_a_noexecute_taint_evicts_and_a_noschedule_taint_keeps(cluster: Cluster) -> None:
    await cluster.apply(nodes_yaml("node1", "node2"))
    await cluster.apply(GPU_DS.replace('gpu: "true"', "{}").replace("nodeSelector:", "nodeSelector:"))
    await cluster.wait("2 pods", lambda s: running_nodes(s, "gpu-agent") == ["node1", "node2"])
    await cluster.nodes.taint("node1", [Taint(key="dedicated", value="x", effect="NoSchedule")], [])
    await cluster.wait(
        "the pod stays, counted misscheduled",
        lambda s: s.daemonsets["default/gpu-agent"].status.number_misscheduled == 1,
    )
    assert running_nodes(cluster.state, "gpu-agent") == ["node1", "node2"]
    await cluster.nodes.taint("node2", [Taint(key="dedicated", value="x", effect="NoExecute")], [])
    await cluster.wait("the pod on node2 goes", lambda s: running_nodes(s, "gpu-agent") == ["node1"])


async def test_a_joining_node_is_served_by_a_node_scoped_decision_that_replays(cluster: Cluster) -> None:
    import contextlib

    from engine.cli.verify import verify
    from events.types import DecisionRecorded

    await cluster.apply(nodes_yaml("node1", "node2"))
    await cluster.apply((DEMO / "002-myweb-ds.yaml").read_text())
    await cluster.wait(
        "settled", lambda s: running_nodes(s, "myweb-ds") == ["node1", "node2"] and not s.in_flight
    )
    await asyncio.sleep(0.3)  # let the follow-up full reconcile record the status
    await cluster.apply(nodes_yaml("node3"))
    await cluster.wait("node3 served", lambda s: running_nodes(s, "myweb-ds") == ["node1", "node2", "node3"])
    scopes = []
    async with contextlib.aclosing(cluster.store.read(subjects=["dse.decision.*.*"])) as events:
        async for stored in events:
            if isinstance(stored.envelope.data, DecisionRecorded):
                scopes.append(stored.envelope.data.scope)
    assert ("node3",) in scopes
    await cluster.wait(
        "status follows", lambda s: s.daemonsets["default/myweb-ds"].status.number_ready == 3, timeout=5
    )
    report = await verify(cluster.store)
    assert report.mismatches == [] and report.checked >= 3


@pytest.mark.parametrize("ready_after", [0.0, 0.03, 0.2])
async def test_status_catches_up_with_readiness_whatever_the_report_timing(
    nc: Any, streams: Any, ready_after: float
) -> None:
    """Pod reports arriving at rest are served node by node and the full reconcile that recounts
    status is owed until it runs (a later report must not cancel it)."""
    c = await Cluster(nc).start(ready_after=ready_after)
    try:
        await c.apply(nodes_yaml("node1", "node2", "node3"))
        await c.apply((DEMO / "002-myweb-ds.yaml").read_text())
        await c.wait(
            "status shows every pod ready",
            lambda s: s.daemonsets["default/myweb-ds"].status.number_available == 3,
            timeout=10,
        )
    finally:
        await c.stop()
