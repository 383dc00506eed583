"""``audit --node X`` lists the decisions naming X as well as X's facts and pod reports, the same with
the engine's decision index and with a scan of the log (docs/console.md, "Audit by node")."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from engine.cli.audit import AuditFilter, audit
from engine.cli.served import Answers
from engine.query.index import nodes_named
from engine.query.service import QueryService, serve_queries
from events.types import DecisionRecorded
from tests.e2e.harness import Cluster, running_nodes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _v3(s: Any) -> bool:
    ds = s.daemonsets["default/agent"]
    pods = [p for p in s.pods.values() if p.owner_name == "agent"]
    return all(p.revision_hash == ds.template_hash for p in pods) and running_nodes(s, "agent") == [
        "n2",
        "n3",
    ]


async def _records(store: Any, nc: Any, f: AuditFilter, *, index: bool) -> list[dict[str, Any]]:
    out = io.StringIO()
    await audit(store, f, "jsonl", out, nc, index=index)
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def _both(store: Any, nc: Any, f: AuditFilter) -> tuple[list[Any], list[Any]]:
    """The audit with the index and with the scan; again while the log moved in between (a late
    status decision is not a difference between the two)."""
    for _ in range(20):
        before = await store.last_seq()
        indexed = await _records(store, nc, f, index=True)
        scanned = await _records(store, nc, f, index=False)
        if indexed == scanned or await store.last_seq() == before:
            break
        await asyncio.sleep(0.1)
    return indexed, scanned


async def _every_decision(store: Any) -> list[tuple[int, DecisionRecorded]]:
    found = []
    async for stored in store.read(subjects=["dse.decision.>"]):
        if isinstance(stored.envelope.data, DecisionRecorded):
            found.append((stored.seq, stored.envelope.data))
    return found


async def test_decisions_naming_the_node_are_listed_with_and_without_the_index(
    served_cluster: tuple[Cluster, QueryService], nc: Any
) -> None:
    cluster, _ = served_cluster
    store = cluster.store
    for node in ("n1", "n2", "n3"):
        f = AuditFilter(node=node)
        last = await store.last_seq()
        indexed, scanned = await _both(store, nc, f)
        assert indexed == scanned
        seqs = [r["seq"] for r in indexed]
        assert seqs == sorted(seqs)
        # every decision of the log up to where the audit began that names the node, and no other
        want = [seq for seq, d in await _every_decision(store) if node in nodes_named(d) and seq <= last]
        got = [r["seq"] for r in indexed if r["type"] == "decision.recorded" and r["seq"] <= last]
        assert got == want
        # the node's own facts are there as before
        assert any(r["type"] == "node.registered" and r["data"]["name"] == node for r in indexed)
    # n2 runs both DaemonSets' pods: decisions of each name it; n3 never had a gpu pod
    n2 = await _records(store, nc, AuditFilter(node="n2", types=["decision.recorded"]), index=True)
    assert {r["data"]["name"] for r in n2} == {"agent", "gpu"}
    n3_gpu, n3_gpu_scanned = await _both(store, nc, AuditFilter(node="n3", ds="default/gpu"))
    assert all(r["data"]["name"] == "gpu" for r in n3_gpu)
    assert n3_gpu == n3_gpu_scanned
    assert (
        await _records(store, nc, AuditFilter(node="n2", limit=3), index=True)
        == (await _records(store, nc, AuditFilter(node="n2"), index=True))[:3]
    )


async def test_a_new_index_reads_the_past_and_the_client_reads_past_the_index(
    served_cluster: tuple[Cluster, QueryService], nc: Any
) -> None:
    cluster, service = served_cluster
    await service.stop()
    fresh = await serve_queries(nc, cluster.engine.projector, Answers(cluster.store, nc).answer)  # type: ignore[union-attr,arg-type]
    try:
        await fresh.index.caught_up.wait()
        before, scanned = await _both(cluster.store, nc, AuditFilter(node="n2"))
        assert before == scanned
        # decisions the index has not read yet (its follower stopped: a lagging index) are still
        # listed, because the client reads the decision tree after what the index has read
        assert fresh._indexing is not None
        fresh._indexing.cancel()
        covered = fresh.index.covered
        await cluster.apply(DS_V3)
        await cluster.wait("agent v3", _v3)
        assert covered < await cluster.store.last_seq()
        after, scanned = await _both(cluster.store, nc, AuditFilter(node="n2"))
        assert after == scanned
        assert fresh.index.covered == covered
        assert any(r["type"] == "decision.recorded" and r["seq"] > covered for r in after)
    finally:
        await fresh.stop()


DS_V3 = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  labels: {team: obs}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: c
        image: example/agent:3
"""
