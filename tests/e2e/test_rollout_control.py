"""Rollout controls end to end (docs/rollout-control.md), through a real nats-server, the engine and
the simulated fleet: a canary on ``canary=true`` nodes then widening, a partition of 2 of 5 nodes,
pause and resume, and the availability guard stopping and auto-reverting a never-ready template.
The checks read the world: which revision runs on which node."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.cli import describe, diff, endpoints, rollout
from engine.cli.verify import verify
from engine.core.guard import GUARD_CONDITION, REVERTED
from engine.core.rollout_control import HELD_BY_PARTITION
from events.envelope import wrap
from events.types import PodFailed
from projections.model import ClusterState
from tests.e2e.harness import Cluster, nodes_yaml, pods_of

pytestmark = pytest.mark.integration

NODES = [f"node{i}" for i in range(1, 6)]
KEY = "default/agent"

DS = """
apiVersion: {api}
kind: DaemonSet
metadata:
  name: agent
spec:
{extra}  selector:
    matchLabels: {{app: agent}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: {mu}
{controls}  template:
    metadata:
      labels: {{app: agent}}
      annotations:
        sim.dsctl.io/never-ready: "{never}"
    spec:
      containers:
      - name: agent
        image: example/agent:{version}
"""


def ds(
    version: str,
    controls: str = "",
    *,
    mu: int = 1,
    extra: str = "",
    never_ready: bool = False,
    api: str = "apps/v1",
) -> str:
    lines = "".join(f"      {line}\n" for line in controls.splitlines())
    body = "".join(f"  {line}\n" for line in extra.splitlines())
    never = "true" if never_ready else "false"
    return DS.format(version=version, controls=lines, mu=mu, extra=body, never=never, api=api)


def revisions(state: ClusterState) -> dict[str, set[str]]:
    """node -> revisions of its live pods."""
    out: dict[str, set[str]] = {n: set() for n in state.nodes}
    for p in pods_of(state, "agent"):
        if p.deletion_timestamp is None:
            out[p.node].add(p.revision_hash)
    return out


def on(state: ClusterState, revision: str) -> list[str]:
    """Nodes whose only live pod is a Ready one of ``revision``."""
    ready = {p.node for p in pods_of(state, "agent") if p.ready and p.deletion_timestamp is None}
    return sorted(n for n, revs in revisions(state).items() if revs == {revision} and n in ready)


def current(state: ClusterState) -> str:
    return state.daemonsets[KEY].template_hash


async def status(cluster: Cluster, timeout: float = 20.0) -> tuple[int, str]:
    out = io.StringIO()
    code = await rollout.rollout_status(cluster.store, "agent", "default", timeout, out)
    return code, out.getvalue()


async def start(nc: Any, labels: dict[str, dict[str, str]] | None = None, first: str = "") -> Cluster:
    c = await Cluster(nc).start()
    await c.apply(nodes_yaml(*NODES, labels=labels))
    await c.apply(first or ds("1"))
    v1 = current(c.state)
    await c.wait("v1 everywhere", lambda s: on(s, v1) == NODES)
    return c


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await start(nc)
    try:
        yield c
    finally:
        await c.stop()


async def test_a_canary_on_labelled_nodes_then_widening(nc: Any, streams: Any) -> None:
    canary = {"canary": "true"}
    c = await start(nc, labels={"node2": canary, "node4": canary})
    try:
        v1 = current(c.state)
        # an OpenKruise manifest, as published: only the apiVersion differs
        await c.apply(ds("2", "selector:\n  matchLabels: {canary: 'true'}", api="apps.kruise.io/v1alpha1"))
        v2 = current(c.state)
        await c.wait("the canaries on v2", lambda s: on(s, v2) == ["node2", "node4"])
        code, text = await status(c)
        assert code == rollout.STOPPED, text
        assert "HeldBySelector" in text and "node1" in text
        assert on(c.state, v1) == ["node1", "node3", "node5"]
        # widening: the same template without the selector rolls the rest
        await c.apply(ds("2", api="apps.kruise.io/v1alpha1"))
        await c.wait("v2 everywhere", lambda s: on(s, v2) == NODES, timeout=30)
        assert (await status(c))[0] == 0
    finally:
        await c.stop()


async def test_a_partition_of_2_of_5_keeps_the_smallest_names_old(cluster: Cluster) -> None:
    v1 = current(cluster.state)
    await cluster.apply(ds("2", "partition: 2"))
    v2 = current(cluster.state)
    await cluster.wait("3 nodes on v2", lambda s: on(s, v2) == ["node3", "node4", "node5"], timeout=30)
    code, text = await status(cluster)
    assert code == rollout.STOPPED, text
    assert "partition 2" in text and HELD_BY_PARTITION in text
    await asyncio.sleep(1.0)  # nothing else moves
    assert on(cluster.state, v1) == ["node1", "node2"]
    out = io.StringIO()
    assert await rollout.rollout_partition(cluster.store, "agent", "default", "0", out) == 0
    assert "partitioned" in out.getvalue()
    await cluster.wait("v2 everywhere", lambda s: on(s, v2) == NODES, timeout=30)
    assert (await status(cluster))[0] == 0
    await cluster.wait("quiet", lambda s: not s.in_flight, timeout=30)
    report = await verify(cluster.store, nc=cluster.nc)
    assert report.checked >= 5 and report.mismatches == [], report.mismatches


async def test_a_failed_old_pod_on_a_partitioned_node_comes_back_on_its_revision(cluster: Cluster) -> None:
    v1 = current(cluster.state)
    await cluster.apply(ds("2", "partition: 2"))
    v2 = current(cluster.state)
    await cluster.wait("3 nodes on v2", lambda s: on(s, v2) == ["node3", "node4", "node5"], timeout=30)
    (old,) = [p for p in pods_of(cluster.state, "agent") if p.node == "node1"]
    # the pod dies on its node (what the executor reports for a crashed container)
    failed = PodFailed(namespace="default", name=old.name, node="node1", reason="crash", exit_code=1)
    await cluster.store.append(
        wrap(failed, id=f"failed-{old.name}", occurred_at=datetime.now(UTC), source="test")
    )
    await cluster.wait(
        "node1 back on v1 with a new pod",
        lambda s: on(s, v1) == ["node1", "node2"] and old.name not in {p.name for p in pods_of(s, "agent")},
        timeout=30,
    )
    assert on(cluster.state, v2) == ["node3", "node4", "node5"]
    await cluster.wait("quiet", lambda s: not s.in_flight, timeout=30)
    report = await verify(cluster.store, nc=cluster.nc)
    assert report.mismatches == [], report.mismatches


async def test_pause_then_resume(cluster: Cluster) -> None:
    v1 = current(cluster.state)
    out = io.StringIO()
    await rollout.rollout_pause(cluster.store, "agent", "default", out)
    await rollout.rollout_restart(cluster.store, "agent", "default", out)  # a new template, paused
    assert out.getvalue().splitlines() == ["daemonset.apps/agent paused", "daemonset.apps/agent restarted"]
    await cluster.wait("the restart folded", lambda s: current(s) != v1)
    v2 = current(cluster.state)
    code, text = await status(cluster)
    assert code == rollout.STOPPED, text
    assert "paused" in text
    assert on(cluster.state, v1) == NODES and on(cluster.state, v2) == []
    await rollout.rollout_resume(cluster.store, "agent", "default", out)
    await cluster.wait("v2 everywhere", lambda s: on(s, v2) == NODES, timeout=30)
    assert (await status(cluster))[0] == 0
    await cluster.wait("quiet", lambda s: not s.in_flight, timeout=30)
    report = await verify(cluster.store, nc=cluster.nc)
    assert report.checked >= 5 and report.mismatches == [], report.mismatches


def tripped(s: ClusterState) -> bool:
    return any(x.type == GUARD_CONDITION and x.status == "True" for x in s.daemonsets[KEY].status.conditions)


GUARD = "progressDeadlineSeconds: 2\nrolloutGuard:\n  failureThreshold: 2\n  autoRevert: {revert}"


async def test_the_guard_stops_after_two_never_ready_nodes(nc: Any, streams: Any) -> None:
    c = await start(nc, first=ds("1", mu=2, extra=GUARD.format(revert="false")))
    try:
        v1 = current(c.state)
        await c.apply(ds("2", mu=2, extra=GUARD.format(revert="false"), never_ready=True))
        v2 = current(c.state)

        def tripped(s: ClusterState) -> bool:
            return any(
                x.type == GUARD_CONDITION and x.status == "True" for x in s.daemonsets[KEY].status.conditions
            )

        await c.wait("the guard trips", tripped, timeout=30)
        code, text = await status(c)
        assert code == rollout.GUARDED, text
        assert "node4" in text and "node5" in text
        described = io.StringIO()
        await describe.describe(c.store, None, "daemonsets", "agent", "default", described)
        assert "Rollout Control: guarded" in described.getvalue()
        assert any(
            line.split()[:3] == ["RolloutGuard", "True", "FailureThresholdReached"]
            for line in described.getvalue().splitlines()
        ), described.getvalue()
        await asyncio.sleep(1.0)
        assert on(c.state, v1) == ["node1", "node2", "node3"]
        assert {n for n, r in revisions(c.state).items() if r == {v2}} == {"node4", "node5"}
    finally:
        await c.stop()


async def test_auto_revert_restores_availability(nc: Any, streams: Any) -> None:
    c = await start(nc, first=ds("1", mu=2, extra=GUARD.format(revert="true")))
    try:
        v1 = current(c.state)
        await c.apply(ds("2", mu=2, extra=GUARD.format(revert="true"), never_ready=True))
        v2 = current(c.state)
        await c.wait("the guard trips", tripped, timeout=30)
        await c.wait("v1 everywhere again", lambda s: on(s, v1) == NODES, timeout=40)
        ds_state = c.state.daemonsets[KEY]
        assert ds_state.template_hash == v2
        guard = next(x for x in ds_state.status.conditions if x.type == GUARD_CONDITION)
        assert (guard.status, guard.reason, guard.revision) == ("True", REVERTED, v2)
        assert (await status(c))[0] == rollout.GUARDED
        # the guard's decisions are recomputable like any other: replay verify finds them identical
        await c.wait("quiet", lambda s: not s.in_flight, timeout=30)
        report = await verify(c.store, nc=c.nc)
        assert report.checked >= 5 and report.mismatches == [], report.mismatches
    finally:
        await c.stop()


PLACED = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: placed
spec:
  selector:
    matchLabels: {{app: placed}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: "100%"}}
  template:
    metadata:
      labels: {{app: placed}}
    spec:
      nodeSelector: {{{selector}}}
      containers:
      - name: placed
        image: example/placed:1
"""


def live(state: ClusterState) -> dict[str, str]:
    return {p.node: p.revision_hash for p in pods_of(state, "placed") if p.deletion_timestamp is None}


async def test_a_preview_of_a_node_selector_change_over_100_nodes_matches_the_apply(
    nc: Any, streams: Any
) -> None:
    names = [f"n{i:03d}" for i in range(100)]
    labels = {
        n: {"pool": "a" if i < 60 else "b", **({"gpu": "true"} if 40 <= i < 80 else {})}
        for i, n in enumerate(names)
    }
    c = await Cluster(nc).start()
    try:
        await c.apply(nodes_yaml(*names, labels=labels))
        await c.apply(PLACED.format(selector="pool: a"))
        await c.wait(
            "60 pods", lambda s: len(live(s)) == 60 and all(p.ready for p in pods_of(s, "placed")), 60
        )
        before = live(c.state)
        change = PLACED.format(selector="gpu: 'true'")
        last = await c.store.last_seq()
        out = io.StringIO()
        assert await diff.apply_dry_run(c.store, change, None, "text", out) == 0
        assert "daemonset.apps/placed configured (server dry run)" in out.getvalue()
        out = io.StringIO()
        assert await diff.diff(c.store, change, None, "json", out) == 1
        assert await c.store.last_seq() == last, "a preview appends nothing"
        (found,) = json.loads(out.getvalue())
        assert found["counts"] == {"place": 20, "stop": 40, "replace": 20, "unchanged": 0, "ineligible": 20}
        assert len(found["nodes"]) == 100 and all(len(n["reasons"]) == 5 for n in found["nodes"])
        await c.apply(change)
        new = c.state.daemonsets["default/placed"].template_hash
        await c.wait(
            "the gpu nodes on the new revision",
            lambda s: (
                live(s) == {n: new for n in names[40:80]} and all(p.ready for p in pods_of(s, "placed"))
            ),
            60,
        )
        after = live(c.state)
        did = {
            "place": sum(1 for n in after if n not in before),
            "stop": sum(1 for n in before if n not in after),
            "replace": sum(1 for n in after if n in before and before[n] != after[n]),
            "unchanged": sum(1 for n in after if n in before and before[n] == after[n]),
            "ineligible": sum(1 for n in names if n not in before and n not in after),
        }
        assert did == found["counts"]
        out = io.StringIO()
        assert await diff.diff(c.store, change, None, "wide", out) == 0
        assert "place 0  stop 0  replace 0  unchanged 40  ineligible 60" in out.getvalue()
    finally:
        await c.stop()


def node_with_address(name: str, ip: str) -> str:
    return (
        f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"
        "status:\n  addresses:\n"
        f"  - {{type: Hostname, address: {name}}}\n  - {{type: InternalIP, address: {ip}}}\n"
    )


EXPORTER = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: exporter
spec:
  selector:
    matchLabels: {app: exporter}
  template:
    metadata:
      labels: {app: exporter}
    spec:
      containers:
      - name: exporter
        image: example/exporter:1
        ports:
        - {containerPort: 9100, hostPort: 9100, name: metrics}
"""


async def test_endpoints_list_each_ready_pod_at_its_node_address_and_follow_a_new_node(
    nc: Any, streams: Any
) -> None:
    c = await Cluster(nc).start()
    try:
        await c.apply("---\n".join(node_with_address(f"node{i}", f"10.0.0.{i}") for i in (1, 2)))
        await c.apply(EXPORTER)
        await c.wait("2 ready", lambda s: sum(p.ready for p in pods_of(s, "exporter")) == 2)
        out = io.StringIO()
        assert await endpoints.get_endpoints(c.store, "exporter", "default", "text", out) == 0
        rows = [line.split() for line in out.getvalue().splitlines()]
        assert rows[0] == ["POD", "NODE", "ADDRESS", "PORTS"]
        assert [r[1:] for r in rows[1:]] == [
            ["node1", "10.0.0.1", "9100/TCP(metrics)"],
            ["node2", "10.0.0.2", "9100/TCP(metrics)"],
        ]
        watched = io.StringIO()
        stop = asyncio.Event()
        watching = asyncio.ensure_future(
            endpoints.get_endpoints(c.store, "exporter", "default", "text", watched, watch=True, stop=stop)
        )
        await asyncio.sleep(0.3)
        await c.apply(node_with_address("node3", "10.0.0.3"))
        await c.wait("3 ready", lambda s: sum(p.ready for p in pods_of(s, "exporter")) == 3)
        deadline = asyncio.get_running_loop().time() + 10
        while "10.0.0.3" not in watched.getvalue() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        assert await watching == 0
        added = [line.split() for line in watched.getvalue().splitlines() if "10.0.0.3" in line]
        assert [r[1:] for r in added] == [["node3", "10.0.0.3", "9100/TCP(metrics)"]]
    finally:
        await c.stop()
