#!/usr/bin/env python
"""How fast is ``dsctl audit`` for one node in a large log? (issue 5: "well under a second" at 1M events)

Builds a log of N events (default 1,000,000) spread over 5,000 nodes on its own embedded server (node
facts, and pod reports for 10 DaemonSets' pods), then times, for a few nodes:
- the audit query in-process (``engine.cli.audit.audit`` with the node's subject filters), and
- the whole CLI command (``dsctl audit --node NAME -o jsonl``, a new process: startup included),
next to a baseline measured in the same run: a raw nats-py ordered consumer on the same filter.

Usage: .venv/bin/python ops/bench_audit.py [--events 1000000] [--nodes 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.cli.audit import AuditFilter, audit  # noqa: E402
from engine.store.connection import close, connect  # noqa: E402
from engine.store.embedded import EmbeddedNats  # noqa: E402
from engine.store.event_store import JetStreamEventStore  # noqa: E402
from engine.store.settings import NatsSettings  # noqa: E402
from engine.store.streams import apply_definitions  # noqa: E402
from events.envelope import Envelope, wrap  # noqa: E402
from events.subjects import node_filters  # noqa: E402
from events.types import Event, NodeLabelsChanged, NodeRegistered, PodCreated, PodReady, PodRunning  # noqa: E402


def events(total: int, nodes: int) -> list[Envelope]:
    now = datetime.now(UTC)
    out: list[Envelope] = []

    def add(ev: Event) -> None:
        out.append(wrap(ev, id=f"e{len(out)}", occurred_at=now, source="bench"))

    for i in range(nodes):
        add(NodeRegistered(name=f"node-{i}", labels={"zone": f"z{i % 3}"}))
    i = 0
    while len(out) < total:
        node = f"node-{i % nodes}"
        ds = f"agent{(i // nodes) % 10}"
        pod = f"{ds}-{i:07d}"
        add(PodCreated(namespace="default", name=pod, node=node, uid=pod, owner_uid=ds, owner_name=ds))
        add(PodRunning(namespace="default", name=pod, node=node))
        add(PodReady(namespace="default", name=pod, node=node))
        if i % 7 == 0:
            add(NodeLabelsChanged(name=node, labels={"zone": f"z{i % 3}", "round": str(i)}))
        i += 1
    return out[:total]


async def raw_filtered_count(nc: object, subjects: list[str]) -> tuple[float, int]:
    """Baseline: a raw ordered push consumer on the same subjects, counting messages to the end."""
    js = nc.jetstream()  # type: ignore[attr-defined]
    info = await js.stream_info("DSE_EVENTS", subjects_filter=subjects[0])
    expected = sum(info.state.subjects.values()) if info.state.subjects else 0
    info2 = await js.stream_info("DSE_EVENTS", subjects_filter=subjects[1])
    expected += sum(info2.state.subjects.values()) if info2.state.subjects else 0
    got = 0
    done = asyncio.Event()

    async def cb(msg: object) -> None:
        nonlocal got
        got += 1
        if got >= expected:
            done.set()

    started = time.perf_counter()
    # nats-py's ordered consumer takes one filter subject: one per subject, together
    subs = [await js.subscribe(s, ordered_consumer=True, cb=cb) for s in subjects]
    await asyncio.wait_for(done.wait(), timeout=120)
    elapsed = time.perf_counter() - started
    for s in subs:
        await s.unsubscribe()
    return elapsed, got


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=5_000)
    args = parser.parse_args()
    with EmbeddedNats() as server:
        nc = await connect(NatsSettings(servers=[server.url]))
        await apply_definitions(nc)
        store = JetStreamEventStore(nc)
        envs = events(args.events, args.nodes)
        t0 = time.perf_counter()
        for start in range(0, len(envs), 50_000):
            await store.append_many(envs[start : start + 50_000])
        build = time.perf_counter() - t0
        print(f"log: {await store.last_seq():,} events appended in {build:.1f}s ({len(envs) / build:,.0f}/s)")
        probes = [f"node-{n}" for n in (0, args.nodes // 2, args.nodes - 1)]
        inproc, cli, raw = [], [], []
        env = dict(os.environ, NATS_URL=server.url)
        for node in probes:
            buf = io.StringIO()
            t = time.perf_counter()
            await audit(store, AuditFilter(node=node), "jsonl", buf)
            inproc.append(time.perf_counter() - t)
            rows = buf.getvalue().count("\n")
            t = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "engine.cli", "audit", "--node", node, "-o", "jsonl"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            cli.append(time.perf_counter() - t)
            assert r.returncode == 0 and r.stdout.count("\n") == rows, r.stderr
            elapsed, got = await raw_filtered_count(nc, node_filters(node))
            raw.append(elapsed)
            print(f"  {node}: {rows} events; in-process {inproc[-1] * 1000:.0f} ms, CLI {cli[-1] * 1000:.0f} ms, "
                  f"raw ordered consumer {elapsed * 1000:.0f} ms ({got} msgs)")  # fmt: skip
        print(
            f"audit --node over {args.events:,} events: in-process median "
            f"{statistics.median(inproc) * 1000:.0f} ms, whole CLI median {statistics.median(cli) * 1000:.0f} ms, "
            f"raw baseline median {statistics.median(raw) * 1000:.0f} ms "
            f"(ratio raw/in-process {statistics.median(raw) / statistics.median(inproc):.2f})"
        )
        await store.close()
        await close(nc)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
