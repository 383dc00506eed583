"""``dsctl bench audit``: ``audit --node X`` on a log of a million events, with the decisions naming X
found by the query service's decision index, next to the same audit scanning every decision, and to
the filtered read of X's facts alone (all ``audit --node`` did before it listed decisions), in the same
run (docs/console.md, "Audit by node").

The log is written directly (no engine): 5,000 nodes registered, then for each pod its
created/running/ready reports and the node-scoped decision that created it (one node named), a
labels change on every seventh, and every 500 pods a DaemonSet-wide decision naming 50 nodes: about a
quarter of the log is decisions, as in a fleet that is being rolled. The index and the scan read
the same records, so the two audits print the same lines (checked here).

In the CLI layer because it runs the CLI's audit; registered from the command line's ``bench``.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from engine.bench.common import Row, Target, nats_server, raw_read
from engine.bench.workload import batched
from engine.cli.audit import AuditFilter, audit
from engine.query.protocol import QueryReply, QueryRequest
from engine.query.service import QueryService
from engine.store.event_store import JetStreamEventStore
from engine.store.projector import Projector
from engine.store.streams import EVENTS_STREAM
from events.envelope import Envelope, wrap
from events.subjects import node_filters
from events.types import (
    CreatePod,
    DecisionRecorded,
    Event,
    NodeLabelsChanged,
    NodeReason,
    NodeRegistered,
    PodCreated,
    PodReady,
    PodRunning,
)
from projections.model import ClusterState

TARGET = 1.0


def log_events(total: int, nodes: int) -> Iterator[Envelope]:
    now = datetime.now(UTC)
    count = 0

    def env(ev: Event) -> Envelope:
        nonlocal count
        count += 1
        return wrap(ev, id=f"a{count}", occurred_at=now, source="bench")

    for i in range(nodes):
        yield env(NodeRegistered(name=f"node-{i}", labels={"zone": f"z{i % 3}"}))
    i = 0
    while count < total:
        node = f"node-{i % nodes}"
        ds = f"agent{(i // nodes) % 10}"
        pod = f"{ds}-{i:07d}"
        create = CreatePod(id=f"c{i}", node=node, namespace="default", pod_name=pod, pod_uid=pod,
                           owner_uid=ds, owner_name=ds, revision_hash="h1")  # fmt: skip
        reason = NodeReason(node=node, action="create", code="NewPod", message="no pod", pod=pod)
        yield env(DecisionRecorded(namespace="default", name=ds, uid=ds, generation=1, now=now,
                                   state_seq=count, template_hash="h1", commands=(create,),
                                   reasons=(reason,)))  # fmt: skip
        yield env(PodCreated(namespace="default", name=pod, node=node, uid=pod, owner_uid=ds, owner_name=ds))
        yield env(PodRunning(namespace="default", name=pod, node=node))
        yield env(PodReady(namespace="default", name=pod, node=node))
        if i % 7 == 0:
            yield env(NodeLabelsChanged(name=node, labels={"zone": f"z{i % 3}", "round": str(i)}))
        if i % 500 == 499:
            named = tuple(
                NodeReason(node=f"node-{(i + k * 97) % nodes}", action="wait", code="Unavailable",
                           message="waiting for an unavailable pod")
                for k in range(50)
            )  # fmt: skip
            yield env(DecisionRecorded(namespace="default", name=ds, uid=ds, generation=2, now=now,
                                       state_seq=count, template_hash="h2", reasons=named))  # fmt: skip
        i += 1


async def _no_answers(req: QueryRequest, state: ClusterState) -> QueryReply:
    return QueryReply(unavailable="this bench serves audit only")


async def _timed_audit(
    store: JetStreamEventStore, nc: object, node: str, *, index: bool
) -> tuple[float, str]:
    out = io.StringIO()
    start = time.perf_counter()
    await audit(store, AuditFilter(node=node), "jsonl", out, nc, index=index)
    return time.perf_counter() - start, out.getvalue()


async def _facts_only(store: JetStreamEventStore, node: str) -> float:
    start = time.perf_counter()
    async for _ in store.read(subjects=node_filters(node)):
        pass
    return time.perf_counter() - start


async def _audit_bench(total: int, nodes: int) -> list[Row]:
    async with nats_server() as (_, nc):
        store = JetStreamEventStore(nc)
        service = None
        try:
            for chunk in batched(log_events(total, nodes), 2_000):
                await store.append_many(chunk)
            events = await store.last_seq()
            service = QueryService(nc, Projector(store), _no_answers)
            started = time.perf_counter()
            await service.start()
            await service.index.caught_up.wait()
            t_index = time.perf_counter() - started
            probes = [f"node-{k}" for k in (7, nodes // 2, nodes - 1)]
            t_idx, t_scan, t_facts, lines = [], [], [], 0
            for node in probes:
                a, text_a = await _timed_audit(store, nc, node, index=True)
                b, text_b = await _timed_audit(store, nc, node, index=False)
                if text_a != text_b:
                    raise AssertionError(f"the index and the scan differ for {node}")
                t_idx.append(a)
                t_scan.append(b)
                t_facts.append(await _facts_only(store, node))
                lines += text_a.count("\n")
            decisions = service.index.decisions
            t_raw, _ = await raw_read(nc, EVENTS_STREAM, events)
        finally:
            if service is not None:
                await service.stop()
            await store.close()
    return [
        Row(
            "audit",
            f"audit --node X with its decisions, {events:,} events, via the decision index",
            statistics.median(t_idx),
            "s",
            baseline=statistics.median(t_scan),
            baseline_label="the same audit scanning every decision of the log",
            target=Target("<=", TARGET, label=f"<= {TARGET:g} s"),
            note=f"{lines // len(probes):,} lines per node on average, same lines both ways; median of "
            f"{len(probes)} nodes; X's facts alone (the audit before decisions): "
            f"{statistics.median(t_facts):.3f} s",
            extra={"index": t_idx, "scan": t_scan, "facts": t_facts},
        ),
        Row(
            "audit",
            f"decision index built from the log ({decisions:,} decisions of {events:,} events)",
            t_index,
            "s",
            baseline=t_raw,
            baseline_label="nats-py ordered consumer read of the whole stream, bytes only",
            note="once per engine start, in the background; the audit reads past it meanwhile",
        ),
    ]


async def audit_by_node(quick: bool) -> list[Row]:
    return await (_audit_bench(20_000, 500) if quick else _audit_bench(1_000_000, 5_000))


if __name__ == "__main__":  # pragma: no cover
    import sys

    for row in asyncio.run(audit_by_node(len(sys.argv) > 1 and sys.argv[1] == "--quick")):
        print(row.metric, "|", row.value, "| baseline", row.baseline, "|", row.note)
