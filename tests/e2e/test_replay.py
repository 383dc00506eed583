"""``replay verify`` on a long randomized run (every decision recomputes identically, every command is
answered) and on a log with a forged decision (refused, and listed with its sequence). Effects audits on
logs built by hand are in ``test_verify_effects.py``."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from engine.cli.verify import verify
from events.envelope import wrap
from events.k8s import Taint
from events.types import DecisionRecorded, DeletePod
from tests.e2e.harness import Cluster, nodes_yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  updateStrategy:
    type: {strategy}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      {selector}
      containers:
      - name: c
        image: example/{name}:{version}
"""


def ds(name: str, version: int, *, gpu_only: bool, on_delete: bool) -> str:
    return DS.format(
        name=name,
        version=version,
        strategy="OnDelete" if on_delete else "RollingUpdate",
        selector='nodeSelector: {gpu: "true"}' if gpu_only else "",
    )


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await Cluster(nc).start()
    try:
        yield c
    finally:
        await c.stop()


async def _random_run(cluster: Cluster, rng: random.Random, steps: int) -> None:
    nodes = [f"n{i}" for i in range(6)]
    await cluster.apply(nodes_yaml(*nodes))
    present = set(nodes)
    for _ in range(steps):
        op = rng.choice(["apply", "apply", "label", "taint", "untaint", "remove", "add", "delete_pod"])
        node = rng.choice(nodes)
        with contextlib.suppress(Exception):  # e.g. an operation on a node just removed: fine to skip
            if op == "apply":
                name = rng.choice(["a", "b", "c"])
                await cluster.apply(ds(name, rng.randint(1, 3), gpu_only=name == "c", on_delete=name == "b"))
            elif op == "label" and node in present:
                await cluster.nodes.label(node, {"gpu": rng.choice(["true", "false"])}, overwrite=True)
            elif op == "taint" and node in present:
                effect = rng.choice(["NoSchedule", "NoExecute"])
                await cluster.nodes.taint(node, [Taint(key="k", value="v", effect=effect)], [])
            elif op == "untaint" and node in present:
                await cluster.nodes.taint(node, [], [("k", "")])
            elif op == "remove" and node in present and len(present) > 2:
                await cluster.nodes.remove(node)
                present.discard(node)
            elif op == "add" and node not in present:
                await cluster.apply(nodes_yaml(node))
                present.add(node)
            elif op == "delete_pod" and cluster.state.pods:
                pod = rng.choice(sorted(cluster.state.pods.values(), key=lambda p: p.key))
                await cluster.delete_pod(pod.name, pod.namespace)
        await asyncio.sleep(rng.choice([0.0, 0.02, 0.1]))
    await cluster.wait("quiet", lambda s: not s.in_flight, timeout=30)
    await asyncio.sleep(0.5)


async def test_every_decision_of_a_long_randomized_run_recomputes_identically(cluster: Cluster) -> None:
    await _random_run(cluster, random.Random(20261122), steps=60)
    report = await verify(cluster.store, nc=cluster.nc)
    assert report.checked >= 30, report
    assert report.mismatches == []
    # and every command those decisions recorded was answered (by its report, or its pod or node going)
    assert report.orphans == [] and report.in_flight == [] and report.superseded == []
    assert report.commands > 0 and report.answered + report.resolved_otherwise == report.commands


async def test_a_forged_decision_is_refused_by_the_engine_and_listed_by_verify(cluster: Cluster) -> None:
    await _random_run(cluster, random.Random(7), steps=10)
    report = await verify(cluster.store)
    assert report.mismatches == [] and report.checked > 0
    # forge: re-record the latest decision that created a pod, its first command changed into a delete
    genuine: DecisionRecorded | None = None
    async with contextlib.aclosing(cluster.store.read(subjects=["dse.decision.*.*"])) as events:
        async for stored in events:
            d = stored.envelope.data
            if isinstance(d, DecisionRecorded) and d.commands:
                genuine = d
    assert genuine is not None
    first = genuine.commands[0]
    forged_cmd = DeletePod(id=first.id, node=first.node, namespace=first.namespace, pod_name=first.pod_name)
    forged = msgspec.structs.replace(genuine, commands=(forged_cmd, *genuine.commands[1:]))
    pods = set(cluster.state.pods)
    result = await cluster.store.append(
        wrap(forged, id="forged-1", occurred_at=datetime.now(UTC), source="mallory")
    )
    assert cluster.engine is not None and cluster.engine.projector is not None
    assert await cluster.engine.projector.wait_for(result.seq)
    await asyncio.sleep(0.5)  # time enough for a relay and an executor to act, had they
    assert set(cluster.state.pods) == pods, "the forged delete was carried out"
    report = await verify(cluster.store, nc=cluster.nc)
    assert report.mismatches == [] and not report.failed
    assert [(f.seq, f.verdict, f.relayed) for f in report.tampered] == [(result.seq, "refused", "no")]
    assert "'mallory'" in report.tampered[0].reason


async def test_a_malformed_message_in_the_log_is_skipped_by_the_engine_and_by_replay(
    cluster: Cluster,
) -> None:
    await cluster.apply(nodes_yaml("n1", "n2"))
    bad = await cluster.store.append_raw("dse.node.n3.registered", b'{"not": "an envelope"}', msg_id="bad-1")
    await cluster.apply(nodes_yaml("n3"))
    await cluster.apply(ds("a", 1, gpu_only=False, on_delete=False))
    await cluster.wait("pods on all three nodes", lambda s: len(s.pods) == 3 and not s.in_flight)
    assert cluster.engine is not None and cluster.engine.projector is not None
    assert cluster.engine.projector.skipped == [bad.seq]
    report = await verify(cluster.store)
    assert report.skipped_malformed == [bad.seq]
    assert report.mismatches == [] and report.checked > 0
