"""``dsctl bench verify``: ``dsctl replay verify`` (decisions recomputed, every command's effect audited)
over a log of a million events, next to a raw ordered read of the same log, in the same run.

The log is built the way ``ops/bench_verify.py`` builds it: N nodes and D DaemonSets, then rolling
updates of every DaemonSet in turn; every decision is taken by the real reconciler on the state folded
so far (so each one recomputes identically), and every command is answered by the reports a simulated
executor sends (created, running, ready; terminating, deleted). Commands are not published to
``DSE_COMMANDS``: every one is answered, so verify has nothing to look up there.

It is timed as a user runs it: ``python -m engine.cli replay verify -o json`` as its own process, start
to exit (events/s of the whole log; its JSON verdict must be clean), with its peak RSS, which does not
grow with the log's length because verify streams it (docs/architecture.md).

In the CLI layer because it runs the CLI's verify; registered from the command line's ``bench``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.bench.common import Row, Target, nats_server, raw_read
from engine.bench.workload import ds_doc, node_event, node_name
from engine.core.manifests import apply_daemonset, parse_daemonset
from engine.core.reconcile import reconcile
from engine.store.event_store import JetStreamEventStore
from engine.store.streams import EVENTS_STREAM
from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.k8s import REVISION_HASH_LABEL
from events.types import (
    AnyCommand,
    CreatePod,
    Event,
    PodCreated,
    PodDeleted,
    PodReady,
    PodRunning,
    PodTerminating,
)
from projections.fold import apply
from projections.model import ClusterState

FLUSH = 20_000
#: verify reads the log three times (docs/architecture.md): a fifth of the raw read's rate is the floor
TARGET_RATIO = 0.2


class VerifyLog:
    """The log being written: folded here as it grows (each decision sees its state), appended in
    batches."""

    def __init__(self, store: JetStreamEventStore) -> None:
        self.store = store
        self.state = ClusterState()
        self.batch: list[Envelope] = []
        self.seq = 0
        self.t = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
        self.decisions = 0

    def add(self, event: Event, source: str) -> None:
        self.seq += 1
        at = datetime.fromtimestamp(self.t, UTC)
        env = wrap(event, id=stable_id("bench-verify", self.seq), occurred_at=at, source=source)
        apply(self.state, env, self.seq)
        self.batch.append(env)

    async def flush(self, at_least: int = 0) -> None:
        if len(self.batch) > at_least:
            results = await self.store.append_many(self.batch)
            if results[-1].seq != self.seq:
                raise RuntimeError(f"the log is not where it was built: {results[-1].seq} != {self.seq}")
            self.batch = []

    def answer(self, cmd: AnyCommand) -> None:
        """The reports a simulated executor sends for ``cmd``."""
        pod = {"namespace": cmd.namespace, "name": cmd.pod_name, "node": cmd.node, "command_id": cmd.id}
        if isinstance(cmd, CreatePod):
            ds = self.state.daemonsets[f"{cmd.namespace}/{cmd.owner_name}"]
            labels = {**ds.spec.template.metadata.labels, REVISION_HASH_LABEL: cmd.revision_hash}
            created = PodCreated(
                **pod,
                uid=cmd.pod_uid,
                owner_uid=cmd.owner_uid,
                owner_name=cmd.owner_name,
                revision_hash=cmd.revision_hash,
                labels=labels,
            )
            self.add(created, "executor")
            self.add(PodRunning(**pod), "executor")
            self.add(PodReady(**pod), "executor")
        else:
            ns, name, node = cmd.namespace, cmd.pod_name, cmd.node
            self.add(PodTerminating(namespace=ns, name=name, node=node, command_id=cmd.id), "executor")
            self.add(PodDeleted(namespace=ns, name=name, node=node, command_id=cmd.id), "executor")

    async def build(self, total: int, nodes: int, daemonsets: int) -> None:
        for i in range(nodes):
            self.add(node_event(node_name(i), i), "bench")
        version = 0
        keys = [f"kube-system/agent-{i:02d}" for i in range(daemonsets)]
        while self.seq < total:
            version += 1
            for i, key in enumerate(keys):  # a rollout of every DaemonSet (the first creates them)
                manifest = parse_daemonset(ds_doc(i, image=f"registry.example/agent:{version}"))
                outcome = apply_daemonset(manifest, self.state.daemonsets.get(key), uid=stable_id("bv-ds", i))
                self.add(outcome.event, "dsctl")
            for _ in range(10_000):  # reconcile until nothing is due (a rollout takes a few rounds)
                self.t += 0.5
                due = False
                for key in keys:
                    decision = reconcile(self.state, key, self.t).decision
                    if decision is None:
                        continue
                    due = True
                    self.decisions += 1
                    self.add(msgspec.structs.replace(decision, leader="bench"), "engine")
                    for cmd in decision.commands:
                        self.answer(cmd)
                await self.flush(at_least=FLUSH)
                if not due:
                    break
        await self.flush()


#: runs ``python -m engine.cli ARGS`` (or ``-c CODE``) and writes its own ``VmHWM`` on stderr at exit.
#: Not ``wait4``'s ``ru_maxrss``: Linux carries the parent's high-water mark over ``fork``+``exec``
#: into it, so a bench process that built a 1M-event log showed its own 842 MB for every child.
_PEAK = """
import runpy, sys
try:
    if sys.argv[1] == "-c":
        exec(sys.argv[2])
    else:
        sys.argv = ["dsctl", *sys.argv[1:]]
        runpy.run_module("engine.cli", run_name="__main__")
finally:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("\\n" + line)
"""


def _process(url: str, *args: str) -> tuple[float, int, int, str]:
    """``dsctl ARGS`` (or ``python -c CODE``) as its own process with ``NATS_URL``: (wall s, exit
    code, peak RSS kB, stdout)."""
    env = {**os.environ, "NATS_URL": url}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PEAK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    output, errors = proc.communicate()  # both pipes drained: a full one would stop the child
    peaks = [line for line in errors.decode(errors="replace").splitlines() if line.startswith("VmHWM:")]
    peak_kb = int(peaks[-1].split()[1]) if peaks else 0
    return time.perf_counter() - start, proc.returncode, peak_kb, output.decode(errors="replace")


async def verify_effects(quick: bool) -> list[Row]:
    total, nodes, daemonsets = (20_000, 200, 4) if quick else (1_000_000, 1_000, 10)
    async with nats_server() as (server, nc):
        store = JetStreamEventStore(nc)
        try:
            log = VerifyLog(store)
            built = time.perf_counter()
            await log.build(total, nodes, daemonsets)
            built = time.perf_counter() - built
            events = await store.last_seq()
        finally:
            await store.close()
        t_raw, size = await raw_read(nc, EVENTS_STREAM, events)
        verify = ("replay", "verify", "-o", "json")
        wall, code, peak_kb, output = await asyncio.to_thread(_process, server.url, *verify)
        # the same interpreter and the CLI's imports, reading nothing: what verify adds to both
        bare_wall, _, bare_kb, _ = await asyncio.to_thread(
            _process, server.url, "-c", "import engine.cli.main, engine.cli.verify"
        )
    try:
        report: dict[str, Any] = json.loads(output)
    except ValueError:
        report = {}
    clean = (
        code == 0
        and bool(report.get("ok"))
        and report.get("checked") == log.decisions
        and report.get("answered") == report.get("commands")
    )
    outcome = (
        f"{report.get('checked', 0):,} decisions recomputed, {report.get('commands', 0):,} commands, "
        f"{report.get('answered', 0):,} answered"
    )
    if not clean:
        outcome += f"; NOT CLEAN (exit {code}, {len(report.get('mismatches', ()))} mismatches, "
        outcome += f"{len(report.get('orphans', ()))} overdue; {log.decisions:,} decisions written)"
    what = f"{events:,} events ({size / 1e6:.0f} MB; {nodes:,} nodes x {daemonsets} DS, rolled)"
    return [
        Row(
            "verify",
            f"`dsctl replay verify` (decisions + effects) as a process, start to exit, {what}",
            events / wall if clean else None,
            "ev/s",
            baseline=events / t_raw,
            baseline_label="nats-py ordered consumer read of the whole stream, bytes only",
            target=Target(">=", TARGET_RATIO, on="ratio", label=f"ratio >= {TARGET_RATIO:g} (reads it 3x)"),
            verdict=None if clean else False,
            note=f"{wall:.1f} s (verify's own {float(report.get('seconds', 0)):.1f} s); {outcome}; "
            f"log built in {built:.0f} s",
            extra={"wall": wall, "raw": t_raw, "events": events, "bytes": size},
        ),
        Row(
            "verify",
            f"peak RSS of that process, {what}",
            peak_kb / 1024,
            "MB",
            baseline=bare_kb / 1024,
            baseline_label="the same interpreter importing the CLI, reading nothing",
            note=f"streamed: the folded state and the unanswered commands, never the log "
            f"(the bare process took {bare_wall:.1f} s)",
        ),
    ]
