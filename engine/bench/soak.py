"""``soak``: the engine under steady churn for N minutes; is anything growing?

The engine (leader) and a simulated fleet executor run in a separate process
(``engine.bench.soakproc``), so the RSS sampled is theirs alone; the nats-server is another child. This
process is the driver: it registers a fleet (``nodes`` x ``daemonsets`` plus one DaemonSet with a
``nodeSelector``), waits until every pod is Ready, then for N minutes keeps

- node churn, one operation every ``churn_every`` seconds: a new node joins, a node is removed, a
  node's labels change (``soak/agent`` toggled: the selector DaemonSet's pod created or deleted), or its
  taints change (a ``NoExecute`` taint added or removed: every pod there deleted or created again; a
  tenth of the fleet is kept tainted);
  the fleet stays within a few nodes of its starting size;
- rollouts: every ``rollout_every`` seconds one DaemonSet, in turn, gets a new image.

Every ``sample_every`` seconds (a minute in a full soak) it samples the engine process's RSS, the
projection lag (the stream's last sequence minus the projection's, polled every 2 s: mean and max over
the interval), the decision latency (driver append -> the first ``decision.recorded`` that read a state
holding the event and names its node or DaemonSet, received on a core subscription: p50/p99 over the
interval), and the stream's size (messages, bytes). A join, label or taint change is matched by the
first decision whose state holds it with a command (or an acting reason) for that node; a rollout by
the DaemonSet's first decision with commands at the new generation; a removal by the first decision
of any DaemonSet whose state holds it (the recount of the pods the fold collected with the node).
Decisions of the last seconds are kept, since one may arrive before the append's ack does.

The summary compares the last interval with the first: flat memory and no lag growth is the goal. The
samples are in the first row's ``series`` (JSON output), for ``--plot``. See docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.bench.common import SOAK_CONTROL, Row, Target, nats_server, percentile, vm_status
from engine.bench.workload import ds_doc, node_event
from engine.core.manifests import apply_daemonset, parse_daemonset
from engine.store.event_store import JetStreamEventStore
from engine.store.jetstream_api import api_request
from engine.store.streams import EVENTS_STREAM
from events.codec import decode
from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.k8s import Taint
from events.subjects import DECISION_TREE
from events.types import (
    DecisionRecorded,
    Event,
    NodeLabelsChanged,
    NodeRegistered,
    NodeRemoved,
    NodeTaintsChanged,
)
from projections.fold import apply_event
from projections.model import ClusterState

SELECTOR_LABEL = "soak/agent"
SELECTOR_DS = 99  # index of the DaemonSet with ``nodeSelector: {soak/agent: "on"}``
TAINT = Taint(key="soak/maintenance", effect="NoExecute", value="true")
#: a decision that has not come this long after its event is counted as missed
DECISION_TIMEOUT = 30.0
POLL_EVERY = 2.0
ACTIONS = frozenset({"create", "delete", "evict"})


@dataclass(frozen=True)
class Plan:
    minutes: float
    nodes: int
    daemonsets: int
    churn_every: float
    rollout_every: float

    @property
    def sample_every(self) -> float:
        # a minute, as the issue asks; a short soak (tests, a try-out) still gets four samples
        return 60.0 if self.minutes >= 3 else max(2.0, self.minutes * 60 / 4)


def plan(quick: bool, minutes: float | None) -> Plan:
    if quick:
        return Plan(minutes or 0.3, nodes=30, daemonsets=2, churn_every=0.25, rollout_every=6.0)
    return Plan(minutes or 10.0, nodes=500, daemonsets=3, churn_every=0.5, rollout_every=60.0)


@dataclass
class _Pending:
    kind: str
    started: float
    seq: int
    node: str = ""
    ds: str = ""
    generation: int = 0


@dataclass
class _Node:
    index: int
    labels: dict[str, str]
    tainted: bool = False


@dataclass
class _Window:
    """What one sampling interval collected."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    lags: list[int] = field(default_factory=list)
    #: (ms, kind, node or DaemonSet, stream seq of the event): the slowest few, to look into
    slowest: list[tuple[float, str, str, int]] = field(default_factory=list)
    appended: int = 0
    ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Seen:
    """What matching needs of a decision: whose, read at which state, acting on which nodes."""

    name: str
    generation: int
    state_seq: int
    acts: bool
    nodes: frozenset[str]

    @classmethod
    def of(cls, d: DecisionRecorded) -> _Seen:
        # the nodes it acts on: its commands' and its reasons that act (a full reconcile also names
        # every node it keeps or skips, which is not a reaction to the event)
        acting = {c.node for c in d.commands}
        acting.update(r.node for r in d.reasons if r.action in ACTIONS)
        return cls(d.name, d.generation, d.state_seq, bool(d.commands), frozenset(acting))


def _answers(p: _Pending, d: _Seen) -> bool:
    """Is ``d`` the reaction to the event ``p`` waits for? (Read a state holding it, and acts on it.)"""
    if d.state_seq < p.seq:
        return False
    if p.kind == "rollout":
        return d.name == p.ds and d.generation >= p.generation and d.acts
    if p.kind == "remove":
        return True
    return p.node in d.nodes


class Driver:
    """Appends the churn and the rollouts, and matches decisions to the events that caused them."""

    def __init__(self, nc: Client, plan: Plan, *, seed: int = 16) -> None:
        self.nc = nc
        self.plan = plan
        self.store = JetStreamEventStore(nc)
        self.rng = random.Random(seed)
        self.run = f"{time.time_ns()}"
        self.count = 0
        self.nodes: dict[str, _Node] = {}
        self.next_node = 0
        self.scratch = ClusterState()  # the DaemonSets as applied, for generations
        self.images: dict[int, int] = {}
        self.pending: dict[str, _Pending] = {}
        self.window = _Window()
        self.rollouts = 0
        #: the decisions of the last few seconds, with when they came
        self.recent: collections.deque[tuple[float, _Seen]] = collections.deque(maxlen=2_000)

    def _wrap(self, event: Event) -> Envelope:
        self.count += 1
        return wrap(
            event,
            id=stable_id("bench-soak", self.run, self.count),
            occurred_at=datetime.now(UTC),
            source="bench-soak",
        )

    def ds_indices(self) -> list[int]:
        return [*range(self.plan.daemonsets), SELECTOR_DS]

    def _ds_event(self, index: int) -> Event:
        doc = ds_doc(index, image=f"registry.example/agent:1.{self.images.get(index, 0)}")
        if index == SELECTOR_DS:
            doc["spec"]["template"]["spec"]["nodeSelector"] = {SELECTOR_LABEL: "on"}
        existing = self.scratch.daemonsets.get(f"kube-system/agent-{index:02d}")
        event = apply_daemonset(parse_daemonset(doc), existing, uid=stable_id("bench-ds", index)).event
        apply_event(self.scratch, event, self.count, 0.0)
        return event

    def _new_node(self) -> NodeRegistered:
        i = self.next_node
        self.next_node += 1
        name = f"soak-{i:06d}"
        event = node_event(name, i)
        labels = {**event.labels, SELECTOR_LABEL: "on" if i % 2 == 0 else "off"}
        self.nodes[name] = _Node(i, labels)
        return NodeRegistered(name=name, labels=labels, conditions=event.conditions, capacity=event.capacity)

    def fleet(self) -> list[Envelope]:
        nodes = [self._wrap(self._new_node()) for _ in range(self.plan.nodes)]
        return nodes + [self._wrap(self._ds_event(i)) for i in self.ds_indices()]

    def expected_pods(self) -> int:
        plain = sum(1 for n in self.nodes.values() if not n.tainted) * self.plan.daemonsets
        return plain + sum(
            1 for n in self.nodes.values() if not n.tainted and n.labels.get(SELECTOR_LABEL) == "on"
        )

    async def _append(self, event: Event, pending: _Pending | None, key: str) -> None:
        started = time.perf_counter()
        result = await self.store.append(self._wrap(event))
        self.window.appended += 1
        kind = pending.kind if pending else type(event).TAG
        self.window.ops[kind] = self.window.ops.get(kind, 0) + 1
        if pending is None:
            return
        pending.started = started
        pending.seq = result.seq
        # the engine may have decided before the append's ack came back here: look at what came
        for at, decision in self.recent:
            if at >= started and _answers(pending, decision):
                self._matched(pending, at)
                return
        self.pending[key] = pending

    async def churn(self) -> None:
        """One node operation, chosen at random within the fleet's bounds."""
        size, base, slack = len(self.nodes), self.plan.nodes, max(3, self.plan.nodes // 20)
        free = [n for n in self.nodes if n not in self.pending]
        kinds = (
            ["label", "taint"]
            + (["join"] if size < base + slack else [])
            + (["remove"] if size > base - slack and free else [])
        )
        kind = self.rng.choice(kinds)
        if kind == "join":
            event = self._new_node()
            await self._append(event, _Pending("join", 0.0, 0, node=event.name), event.name)
            return
        if not free:
            return
        if kind == "taint":
            # taint until a tenth of the fleet is, then lift taints: the fleet's shape stays the same
            tainted = sum(1 for n in self.nodes.values() if n.tainted)
            want = tainted < max(1, len(self.nodes) // 10)
            free = [n for n in free if self.nodes[n].tainted != want] or free
        name = self.rng.choice(free)
        node = self.nodes[name]
        if kind == "remove":
            del self.nodes[name]
            await self._append(
                NodeRemoved(name=name), _Pending("remove", 0.0, 0, node=name), f"removed:{name}"
            )
        elif kind == "label" and not node.tainted:
            on = node.labels.get(SELECTOR_LABEL) == "on"
            node.labels = {**node.labels, SELECTOR_LABEL: "off" if on else "on"}
            event_l = NodeLabelsChanged(name=name, labels=dict(node.labels))
            await self._append(event_l, _Pending("label", 0.0, 0, node=name), name)
        else:
            node.tainted = not node.tainted
            event_t = NodeTaintsChanged(name=name, taints=(TAINT,) if node.tainted else ())
            await self._append(event_t, _Pending("taint", 0.0, 0, node=name), name)

    async def rollout(self) -> None:
        index = self.rollouts % self.plan.daemonsets
        self.rollouts += 1
        self.images[index] = self.images.get(index, 0) + 1
        event = self._ds_event(index)
        name = f"agent-{index:02d}"
        generation = self.scratch.daemonsets[f"kube-system/{name}"].generation
        await self._append(event, _Pending("rollout", 0.0, 0, ds=name, generation=generation), f"ds:{name}")

    async def on_decision(self, msg: Msg) -> None:
        now = time.perf_counter()
        try:
            decision = decode(msg.data).data
        except Exception:
            return
        if not isinstance(decision, DecisionRecorded):
            return
        seen = _Seen.of(decision)
        self.recent.append((now, seen))
        for key, p in list(self.pending.items()):
            if _answers(p, seen):
                del self.pending[key]
                self._matched(p, now)

    def _matched(self, p: _Pending, at: float) -> None:
        ms = (at - p.started) * 1000
        self.window.latencies.setdefault(p.kind, []).append(ms)
        slowest = self.window.slowest
        slowest.append((round(ms, 1), p.kind, p.node or p.ds, p.seq))
        slowest.sort(reverse=True)
        del slowest[5:]

    def expire(self) -> None:
        now = time.perf_counter()
        for key, p in list(self.pending.items()):
            if now - p.started > DECISION_TIMEOUT:
                del self.pending[key]
                self.window.missed[p.kind] = self.window.missed.get(p.kind, 0) + 1
                self.window.slowest.insert(0, (-1.0, p.kind, p.node or p.ds or key, p.seq))

    def take_window(self) -> _Window:
        window, self.window = self.window, _Window()
        return window


class EngineProcess:
    """The child running engine + fleet executor; its stderr goes to a temp file (an hour of it)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process it logs

    async def start(self, url: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine.bench.soakproc",
            "--url",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.stderr,
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 180)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            raise RuntimeError(f"the soak engine process did not start: {self.tail()}")

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _ask(nc: Client, objects: bool = False) -> dict[str, Any]:
    msg = await nc.request(SOAK_CONTROL, b"objects" if objects else b"", timeout=20)
    report: dict[str, Any] = json.loads(msg.data)
    return report


async def _stream(nc: Client) -> dict[str, int]:
    info = await api_request(nc, f"STREAM.INFO.{EVENTS_STREAM}", timeout=20)
    state = info.get("state", {})
    return {k: int(state.get(k, 0)) for k in ("messages", "bytes", "last_seq")}


def _latency_figures(latencies: dict[str, list[float]]) -> dict[str, Any]:
    every = [x for values in latencies.values() for x in values]
    return {
        "decisions_matched": len(every),
        "latency_p50_ms": percentile(every, 50) if every else None,
        "latency_p99_ms": percentile(every, 99) if every else None,
        "latency_max_ms": max(every) if every else None,
        "latency_by_kind_p50_ms": {k: percentile(v, 50) for k, v in sorted(latencies.items()) if v},
        "latency_by_kind_max_ms": {k: max(v) for k, v in sorted(latencies.items()) if v},
    }


async def soak(quick: bool, minutes: float | None = None) -> list[Row]:
    p = plan(quick, minutes)
    async with nats_server() as (server, nc):
        driver = Driver(nc, p)
        envelopes = driver.fleet()
        await driver.store.append_many(envelopes)
        engine = EngineProcess()
        await engine.start(server.url)
        try:
            return await _drive(nc, server.pid, engine, driver, p)
        except Exception as err:
            raise RuntimeError(f"{err}; engine process stderr: {engine.tail()[-800:]}") from err
        finally:
            await engine.stop()
            engine.stderr.close()
            await driver.store.close()


async def _drive(
    nc: Client, server_pid: int | None, engine: EngineProcess, driver: Driver, p: Plan
) -> list[Row]:
    # the fleet first: every pod Ready before the clock starts
    deadline = time.monotonic() + 300
    while True:
        report = await _ask(nc)
        if report["ready"] >= driver.expected_pods() and report["idle"]:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the fleet did not converge in 300 s: {report}")
        await asyncio.sleep(0.5)
    sub = await nc.subscribe(DECISION_TREE, cb=driver.on_decision)
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    end = start + p.minutes * 60
    next_churn, next_rollout = start, start + min(p.rollout_every / 2, p.sample_every / 2)
    next_poll, next_sample = start, start + p.sample_every
    try:
        while True:
            now = time.monotonic()
            if now >= end and next_sample > end + 0.5:  # the sample at the end taken too
                break
            if now >= next_churn:
                await driver.churn()
                next_churn = max(next_churn + p.churn_every, now)
            if now >= next_rollout:
                await driver.rollout()
                next_rollout = max(next_rollout + p.rollout_every, now)
            if now >= next_poll:
                stream = await _stream(nc)
                report = await _ask(nc)
                driver.window.lags.append(max(0, stream["last_seq"] - int(report["seq"])))
                next_poll = max(next_poll + POLL_EVERY, now)
            if now >= next_sample:
                sample = await _sample(nc, server_pid, driver, start)
                samples.append(sample)
                print(f"soak: {json.dumps(sample)}", file=sys.stderr, flush=True)
                next_sample += p.sample_every
                if engine.proc is not None and engine.proc.returncode is not None:
                    raise RuntimeError(f"the engine process exited ({engine.proc.returncode})")
            driver.expire()
            wake = min(next_churn, next_rollout, next_poll, next_sample)
            await asyncio.sleep(min(0.05, max(0.0, wake - time.monotonic())))
    finally:
        await sub.unsubscribe()
    return _rows(p, samples)


async def _sample(nc: Client, server_pid: int | None, driver: Driver, start: float) -> dict[str, Any]:
    stream = await _stream(nc)
    report = await _ask(nc, objects=True)
    window = driver.take_window()
    lag = max(0, stream["last_seq"] - int(report["seq"]))
    lags = [*window.lags, lag]
    server: dict[str, int] = {}
    if server_pid is not None:
        with contextlib.suppress(OSError):
            server = vm_status(server_pid)
    return {
        "t_s": round(time.monotonic() - start, 1),
        "engine_rss_mb": report["VmRSS"] / 1024,
        "engine_hwm_mb": report["VmHWM"] / 1024,
        "server_rss_mb": server.get("VmRSS", 0) / 1024,
        "gc_objects": report.get("gc_objects"),
        "lag": lag,
        "lag_mean": sum(lags) / len(lags),
        "lag_max": max(lags),
        **_latency_figures(window.latencies),
        "missed": dict(window.missed),
        "slowest": [list(x) for x in window.slowest],
        "latencies_ms": [round(x, 2) for values in window.latencies.values() for x in values],
        "stream_messages": stream["messages"],
        "stream_bytes": stream["bytes"],
        "appended": window.appended,
        "ops": dict(window.ops),
        "nodes": report["nodes"],
        "pods": report["pods"],
        "ready": report["ready"],
        "decisions": report["decisions"],
        "reconciles": report["reconciles"],
    }


def _growth_verdict(first: float | None, last: float | None, factor: float, slack: float) -> bool | None:
    if first is None or last is None:
        return None
    return last <= first * factor + slack


def _rows(p: Plan, samples: list[dict[str, Any]], *, interval: float | None = None) -> list[Row]:
    if not samples:
        raise RuntimeError("the soak took no sample")
    first, last = samples[0], samples[-1]
    every = p.sample_every if interval is None else interval
    span = f"{p.minutes:g} min, {len(samples)} samples every {every:g} s"
    fleet = f"{p.nodes} nodes x {p.daemonsets} DS + 1 selector DS"
    churn = f"a node op every {p.churn_every:g} s, a rollout every {p.rollout_every:g} s"
    appended = sum(s["appended"] for s in samples)
    missed = sum(sum(s["missed"].values()) for s in samples)
    series = {
        "kind": "soak",
        "plan": {
            "minutes": p.minutes,
            "nodes": p.nodes,
            "daemonsets": p.daemonsets,
            "churn_every": p.churn_every,
            "rollout_every": p.rollout_every,
            "sample_every": every,
        },
        "samples": samples,
    }
    peak = max(s["engine_hwm_mb"] for s in samples)
    p99_first, p99_last = first["latency_p99_ms"], last["latency_p99_ms"]
    return [
        Row(
            "soak",
            f"engine + fleet executor RSS, last sample vs first ({fleet}; {churn}; {span})",
            last["engine_rss_mb"],
            "MB",
            baseline=first["engine_rss_mb"],
            baseline_label="the same process at the first sample",
            target=Target("<=", 1.1, on="ratio", label="flat: last/first <= 1.1"),
            note=f"peak {peak:.0f} MB; nats-server {first['server_rss_mb']:.0f} -> "
            f"{last['server_rss_mb']:.0f} MB; pods {first['pods']} -> {last['pods']}",
            series=series,
        ),
        Row(
            "soak",
            f"projection lag (stream last seq - projection seq), max over the last interval ({span})",
            float(last["lag_max"]),
            "events",
            baseline=float(first["lag_max"]),
            baseline_label="the same, first interval",
            target=Target("<=", 0, label="no growth: last <= 2 x first + 50"),
            verdict=_growth_verdict(first["lag_max"], last["lag_max"], 2.0, 50.0),
            note=f"mean {first['lag_mean']:.1f} -> {last['lag_mean']:.1f} events",
        ),
        Row(
            "soak",
            "decision latency p99 (event appended -> decision.recorded received), last interval",
            p99_last,
            "ms",
            baseline=p99_first,
            baseline_label="the same, first interval",
            target=Target("<=", 2.0, on="ratio", label="no growth: last/first <= 2"),
            verdict=None if missed == 0 else False,
            note=f"p50 {_ms(first['latency_p50_ms'])} -> {_ms(last['latency_p50_ms'])}; "
            f"{sum(s['decisions_matched'] for s in samples):,} matched"
            + (f", {missed} MISSED (no decision in {DECISION_TIMEOUT:g} s)" if missed else ""),
        ),
        Row(
            "soak",
            "event stream size at the end",
            last["stream_bytes"] / 1e6,
            "MB",
            baseline=first["stream_bytes"] / 1e6,
            baseline_label="at the first sample",
            note=f"{first['stream_messages']:,} -> {last['stream_messages']:,} messages; "
            f"the driver appended {appended:,} events "
            f"({appended / max(1e-9, p.minutes):,.0f}/min), the rest are decisions and pod reports",
        ),
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def rows_from_log(text: str) -> list[Row]:
    """The rows of a soak from its stderr (the ``soak: {...}`` line printed at every sample), for a run
    that was stopped before it printed its report: every sample it took still counts."""
    samples = [json.loads(line[len("soak: ") :]) for line in text.splitlines() if line.startswith("soak: {")]
    if not samples:
        return []
    minutes = float(samples[-1]["t_s"]) / 60
    full = plan(False, None)
    return _rows(
        Plan(minutes, full.nodes, full.daemonsets, full.churn_every, full.rollout_every),
        samples,
        interval=float(samples[0]["t_s"]),
    )
