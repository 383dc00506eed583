"""The ``fanout`` scenario: 10,000 node executors (``--quick``: 400) on a 3-node replicated cluster.

Each executor is the product's own (``run_executor``: its node lease, its checkpoint, its command feed),
run by worker processes (``engine.bench.fanout_worker``, two of them, executors sharing a few
connections each); the engine runs here. What it prints, each beside a baseline measured in the same run:

1. **Idle cost per server** (the highest of the three): RSS and CPU with every executor connected and
   nothing to do, against the same servers before any executor connected. The node lease TTL is 30 s
   (renewed every 10 s: 1,000 replicated writes a second at 10,000 nodes; docs/deploy.md).
2. **Decision to executor**, p50 and p99 over the 5,000 creates (``--quick``: 200) of one DaemonSet
   applied to half the nodes: from the decision's store time to the executor reading the command.
   Baseline: the same count of raw JetStream publishes into an R3 stream, from publish to a plain
   subscriber's receipt, on the same cluster.
3. **Resume after a server restart**: the server leading ``DSE_COMMANDS`` is restarted (stopped, started
   again) and the DaemonSet deleted at once; the figure is the time from the stop until every executor
   has read its delete. Baseline: the time every executor took to read its create, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.bench.common import FANOUT_CONTROL, Row, Target, percentile
from engine.bench.workload import ds_doc, node_event
from engine.core.manifests import apply_daemonset, parse_daemonset
from engine.reconciler.engine import Engine
from engine.store.connection import close, connect
from engine.store.direct_get import read_after
from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.event_store import JetStreamEventStore
from engine.store.jetstream_api import api_request
from engine.store.settings import NatsSettings
from engine.store.setup import ensure
from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.subjects import COMMANDS_STREAM, DECISION_TREE, EVENTS_STREAM
from events.types import DaemonSetDeleted, NodeRegistered

WORKERS = 2
NODE_LEASE_TTL = 30.0
POLL_SECONDS = 60.0
SELECT_LABEL = "bench.dsctl.io/fanout"
PREFIX = "fan"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _idle(cluster: EmbeddedCluster, window: float) -> tuple[float, float]:
    """(highest RSS MB at the end, highest CPU % of a core over the window) of the servers."""
    pids = [s.pid for s in cluster.servers if s.pid is not None]
    before = [_cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - t0
    cpu = [100 * (_cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]
    return max(_rss_mb(p) for p in pids), max(cpu)


def _node(i: int) -> NodeRegistered:
    name = f"{PREFIX}-{i:05d}"
    event = node_event(name, i)
    return msgspec.structs.replace(
        event, labels={**event.labels, SELECT_LABEL: "yes" if i % 2 == 0 else "no"}
    )


def _envelope(event: Any, key: str) -> Envelope:
    return wrap(event, id=stable_id("bench-fanout", key), occurred_at=datetime.now(UTC), source="bench")


def _daemonset() -> tuple[Envelope, str]:
    doc = ds_doc(0)
    doc["spec"]["template"]["spec"]["nodeSelector"] = {SELECT_LABEL: "yes"}
    uid = stable_id("bench-fanout-ds", 0)
    applied = apply_daemonset(parse_daemonset(doc), None, uid=uid).event
    return _envelope(applied, "ds"), uid


def _stored_at(text: str) -> float:
    """RFC 3339 with nanoseconds (the server's) -> epoch seconds."""
    head, _, rest = text.rstrip("Z").partition(".")
    micros = (rest + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}+00:00").timestamp()


class Workers:
    def __init__(self, urls: list[str], nodes: int, connections: int) -> None:
        self.urls = urls
        self.nodes = nodes
        self.connections = connections
        self.procs: list[asyncio.subprocess.Process] = []
        self.names = [f"w{i}" for i in range(WORKERS)]

    async def start(self, timeout: float) -> list[dict[str, Any]]:
        per = -(-self.nodes // WORKERS)
        for i, name in enumerate(self.names):
            first = i * per
            count = min(per, self.nodes - first)
            args = [
                "--urls", ",".join(self.urls), "--name", name, "--first", str(first),
                "--count", str(count), "--prefix", PREFIX, "--connections", str(self.connections),
                "--start-timeout", str(timeout), "--poll-seconds", str(POLL_SECONDS),
            ]  # fmt: skip
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "engine.bench.fanout_worker", *args, stdout=asyncio.subprocess.PIPE
                )
            )
        reports = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout + 30)
            if not line:
                raise RuntimeError(f"a fan-out worker exited with {await proc.wait()} before starting")
            reports.append(json.loads(line))
        return reports

    async def ask(self, nc: Client, verb: str, body: dict[str, Any] | None = None) -> list[Any]:
        out = []
        for name in self.names:
            msg: Msg = await nc.request(
                f"{FANOUT_CONTROL}.{name}.{verb}", json.dumps(body or {}).encode(), timeout=10
            )
            out.append(json.loads(msg.data))
        return out

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 40)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Deliveries:
    """Commands read by the executors, by kind, with their decision's store time."""

    def __init__(self, nc: Client, workers: Workers) -> None:
        self.nc = nc
        self.workers = workers
        self.received: list[tuple[int, str, float]] = []
        #: per command read: seconds from its decision's store time to its own store time
        self.relayed: list[tuple[int, str, float]] = []
        self._decided: dict[int, float] = {}

    async def collect(self) -> None:
        for batch in await self.workers.ask(self.nc, "deliveries"):  # [seq, kind, read at, stored at]
            for s, k, t, stored in batch:
                self.received.append((int(s), str(k), float(t)))
                if stored:
                    self.relayed.append((int(s), str(k), _stored_at(stored)))

    def count(self, kind: str) -> int:
        return sum(1 for _, k, _ in self.received if k == kind)

    async def wait(self, kind: str, want: int, timeout: float) -> float | None:
        """Wall time the ``want``-th command of ``kind`` was read, or None when not all came in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.collect()
            if self.count(kind) >= want:
                return max(t for _, k, t in self.received if k == kind)
            await asyncio.sleep(0.5)
        return None

    async def latencies(self, kind: str) -> list[float]:
        seqs = {s for s, k, _ in self.received if k == kind and s}
        for seq in seqs - self._decided.keys():
            batch = await read_after(self.nc, EVENTS_STREAM, f"{DECISION_TREE}", seq, batch=1)
            if batch.messages and batch.messages[0].seq == seq:
                self._decided[seq] = _stored_at(batch.messages[0].stored_at)
        return [
            (t - self._decided[s]) * 1000 for s, k, t in self.received if k == kind and s in self._decided
        ]

    def relay_latencies(self, kind: str) -> list[float]:
        """ms from each command's decision to the command stored on DSE_COMMANDS (the relay's part)."""
        return [(t - self._decided[s]) * 1000 for s, k, t in self.relayed if k == kind and s in self._decided]


async def _raw_baseline(nc: Client, count: int) -> list[float]:
    """Publish ``count`` messages at once into an R3 stream; ms from each publish to a subscriber."""
    js = nc.jetstream()
    await api_request(
        nc,
        "STREAM.CREATE.BENCH_FAN",
        {"name": "BENCH_FAN", "subjects": ["benchfan.>"], "num_replicas": 3, "storage": "file"},
    )
    got: dict[int, float] = {}
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got[int(msg.data)] = time.time()
        if len(got) >= count:
            done.set()

    sub = await nc.subscribe("benchfan.>", cb=on_msg)
    sent: dict[int, float] = {}

    async def one(i: int) -> None:
        sent[i] = time.time()
        await js.publish(f"benchfan.n{i}", str(i).encode())

    await asyncio.gather(*(one(i) for i in range(count)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 60)
    await sub.unsubscribe()
    await api_request(nc, "STREAM.DELETE.BENCH_FAN")
    return [(got[i] - sent[i]) * 1000 for i in got]


async def fanout(quick: bool) -> list[Row]:
    nodes = 400 if quick else 10_000
    selected = nodes // 2
    window = 3.0 if quick else 30.0
    cluster = EmbeddedCluster(3)
    await asyncio.to_thread(cluster.start)
    rows: list[Row] = []
    try:
        await asyncio.to_thread(cluster.wait_ready)
        setup_nc = await connect(NatsSettings(servers=cluster.urls, name="bench-fanout-setup"))
        try:
            await ensure(setup_nc, replicas=3, node_lease_ttl=NODE_LEASE_TTL, lease_ttl=5.0)
            target = await cluster.stream_leader(COMMANDS_STREAM, nc=setup_nc) or cluster.names[0]
        finally:
            await close(setup_nc)
        # the engine (and the bench's own reads) stay off the server that will be restarted
        others = [u for n, u in zip(cluster.names, cluster.urls, strict=True) if n != target]
        nc = await connect(NatsSettings(servers=others, name="bench-fanout-engine"))
        store = JetStreamEventStore(nc)
        engine = Engine(nc, identity="bench-fanout-engine", lease_ttl=5.0, store=store)
        engine_task: asyncio.Task[None] | None = None
        workers = Workers(cluster.urls, nodes, 2 if quick else 8)
        try:
            for start in range(0, nodes, 2000):
                await store.append_many(
                    [_envelope(_node(i), f"node-{i}") for i in range(start, min(nodes, start + 2000))]
                )
            await engine.start()
            engine_task = asyncio.ensure_future(engine.run())
            await asyncio.wait_for(engine.leading.wait(), 60)
            base_rss, base_cpu = await _idle(cluster, window)
            t0 = time.monotonic()
            reports = await workers.start(timeout=300)
            start_seconds = time.monotonic() - t0
            failed = sum(r["failed"] for r in reports)
            if failed:
                raise RuntimeError(f"{failed} executors failed to start: {[r['failures'] for r in reports]}")
            await asyncio.sleep(5.0)  # lets the start-up burst (leases, checkpoints) die down
            rss, cpu = await _idle(cluster, window)
            note = (
                f"{nodes:,} executors in {WORKERS} processes over {WORKERS * workers.connections} "
                f"connections, node lease TTL {NODE_LEASE_TTL:g} s; started in {start_seconds:.1f} s"
            )
            rows.append(Row("fanout", f"idle server RSS, highest of 3, {nodes:,} executors", rss, "MB",
                            base_rss, "MB", "the same servers before any executor connected",
                            Target("<=", 100.0), note=note))  # fmt: skip
            rows.append(Row("fanout", f"idle server CPU, highest of 3, {nodes:,} executors", cpu, "%",
                            base_cpu, "%", "the same servers before any executor connected",
                            Target("<=", 5.0), note=f"over {window:g} s"))  # fmt: skip

            deliveries = Deliveries(nc, workers)
            await deliveries.collect()
            ds, uid = _daemonset()
            deleted = _envelope(DaemonSetDeleted(namespace="kube-system", name="agent-00", uid=uid), "delete")

            async def cycle(
                kind: str, envelope: Envelope, restart: bool = False
            ) -> tuple[float | None, float]:
                """Append ``envelope``; seconds until every executor read its command of ``kind``."""
                deliveries.received.clear()
                deliveries.relayed.clear()
                t0 = time.time()
                stopping = (
                    asyncio.ensure_future(asyncio.to_thread(cluster.restart, target)) if restart else None
                )
                await store.append_many([envelope])
                restarted = 0.0
                if stopping is not None:
                    await stopping
                    restarted = time.time() - t0
                last = await deliveries.wait(kind, selected, 180)
                return (None if last is None else last - t0), restarted

            cpu_before = [w["cpu_seconds"] for w in await workers.ask(nc, "status")]
            own_before, wall_before = time.process_time(), time.monotonic()
            await cycle("CreatePod", ds)
            wall = time.monotonic() - wall_before
            own = time.process_time() - own_before
            cpu_after = [w["cpu_seconds"] for w in await workers.ask(nc, "status")]
            busy = ", ".join(f"{a - b:.1f}" for a, b in zip(cpu_after, cpu_before, strict=True))
            raw = await _raw_baseline(nc, selected)
            lat = await deliveries.latencies("CreatePod")
            relay = deliveries.relay_latencies("CreatePod")
            got = deliveries.count("CreatePod")
            for q, name in ((50, "p50"), (99, "p99")):
                rows.append(Row("fanout", f"decision -> executor {name}, {selected:,} creates at once",
                                percentile(lat, q) if lat else None, "ms",
                                percentile(raw, q) if raw else None, "ms",
                                f"raw JetStream publish -> subscriber {name}, {selected:,} messages, R3",
                                note=f"{got:,} of {selected:,} read; of which decision -> command stored "
                                     f"{percentile(relay, q) if relay else float('nan'):.1f} ms (the relay); "
                                     f"in those {wall:.1f} s the worker "
                                     f"processes used {busy} s of CPU, the engine's {own:.1f} s "
                                     "(2 cores, shared with the 3 servers)"))  # fmt: skip
            calm, _ = await cycle("DeletePod", deleted)
            # again, now stopping the DSE_COMMANDS leader as the deletes are decided, then starting it
            await cycle("CreatePod", _envelope(ds.data, "ds-again"))
            resume, restarted = await cycle(
                "DeletePod", _envelope(deleted.data, "delete-again"), restart=True
            )
            rows.append(Row("fanout", f"every executor resumed: all {selected:,} deletes read, one server "
                            "restarted meanwhile", resume, "s", calm, "s",
                            f"the same {selected:,} deletes, no restart",
                            note=f"restarted {target} (the DSE_COMMANDS leader) in {restarted:.1f} s; "
                                 f"{deliveries.count('DeletePod'):,} of {selected:,} read"))  # fmt: skip
        finally:
            await workers.stop()
            if engine_task is not None:
                engine_task.cancel()
                await asyncio.wait({engine_task}, timeout=10)
            await store.close()
            await close(nc)
    finally:
        await asyncio.to_thread(cluster.close)
    return rows
