#!/usr/bin/env python
"""How long does ``dsctl replay verify`` take over a large log, and how much memory? (issue 9: it must
run over 1M events, streamed.)

Builds, on its own embedded server, a log the way the engine would have written it: N nodes and D
DaemonSets, then rolling updates one after another; every decision is taken by the real reconciler on
the state folded so far (so every one recomputes identically), and every command is answered by the
reports a simulated executor would send (created, running, ready; terminating, deleted). With
``--lose K`` the reports of K creates of the first rollout are never sent: the engine's clock then jumps
past the in-flight window, the core creates again, and verify lists those K as superseded. Commands are
not published to ``DSE_COMMANDS`` (answered ones need no lookup there; the lost ones are then looked for
and found absent).

Then it runs ``python -m engine.cli replay verify`` as its own process under ``/usr/bin/time -v`` and
prints its summary, wall time and peak RSS.

Usage: .venv/bin/python ops/bench_verify.py [--events 1000000] [--nodes 1000] [--daemonsets 10] [--lose 3]
       [--store DIR (kept; reused if it holds a log)] [--run "-m engine.cli replay verify"]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from engine.cli.apply import parse  # noqa: E402
from engine.core.manifests import DaemonSetManifest, apply_daemonset  # noqa: E402
from engine.core.reconcile import reconcile  # noqa: E402
from engine.store.connection import close, connect  # noqa: E402
from engine.store.embedded import EmbeddedNats  # noqa: E402
from engine.store.event_store import JetStreamEventStore  # noqa: E402
from engine.store.settings import NatsSettings  # noqa: E402
from engine.store.streams import apply_definitions  # noqa: E402
from events.envelope import Envelope, wrap  # noqa: E402
from events.k8s import REVISION_HASH_LABEL  # noqa: E402
from events.types import (  # noqa: E402
    CreatePod,
    DeletePod,
    Event,
    EvictPod,
    NodeRegistered,
    PodCreated,
    PodDeleted,
    PodReady,
    PodRunning,
    PodTerminating,
)
from projections.fold import apply  # noqa: E402
from projections.model import ClusterState  # noqa: E402

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: "10%"}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: c, image: "example/{name}:{version}"}}]}}
"""


class Log:
    """The log being written: folded locally as it grows (so each decision sees its state), appended
    to the server in batches."""

    def __init__(self, store: JetStreamEventStore) -> None:
        self.store = store
        self.state = ClusterState()
        self.batch: list[Envelope] = []
        self.seq = 0
        self.t = datetime(2026, 11, 1, tzinfo=UTC).timestamp()

    def add(self, event: Event, source: str = "bench") -> None:
        self.seq += 1
        env = wrap(event, id=f"e{self.seq}", occurred_at=datetime.fromtimestamp(self.t, UTC), source=source)
        apply(self.state, env, self.seq)
        self.batch.append(env)

    async def flush(self, at_least: int = 0) -> None:
        if len(self.batch) > at_least:
            results = await self.store.append_many(self.batch)
            assert results[-1].seq == self.seq, (results[-1], self.seq)
            self.batch = []


def report(log: Log, cmd: CreatePod | DeletePod | EvictPod) -> None:
    if isinstance(cmd, CreatePod):
        common = {"namespace": cmd.namespace, "name": cmd.pod_name, "node": cmd.node}
        log.add(
            PodCreated(
                **common,
                uid=cmd.pod_uid,
                owner_uid=cmd.owner_uid,
                owner_name=cmd.owner_name,
                revision_hash=cmd.revision_hash,
                labels={"app": cmd.owner_name, REVISION_HASH_LABEL: cmd.revision_hash},  # as a driver does
                command_id=cmd.id,
            ),
            "executor",
        )
        log.add(PodRunning(**common), "executor")
        log.add(PodReady(**common), "executor")
    else:
        pod = {"namespace": cmd.namespace, "name": cmd.pod_name, "node": cmd.node, "command_id": cmd.id}
        log.add(PodTerminating(**pod), "executor")
        log.add(PodDeleted(**pod), "executor")


async def build(log: Log, events: int, nodes: int, daemonsets: int, lose: int) -> tuple[int, int]:
    for i in range(nodes):
        log.add(NodeRegistered(name=f"node-{i:05d}", labels={"zone": f"z{i % 3}"}))
    names = [f"ds{i}" for i in range(daemonsets)]
    decisions = lost = 0
    version = 0
    while log.seq < events:
        version += 1
        for name in names:  # a rollout of every DaemonSet (the first "rollout" creates them)
            (manifest,) = parse(DS.format(name=name, version=version))
            assert isinstance(manifest, DaemonSetManifest)
            outcome = apply_daemonset(manifest, log.state.daemonsets.get(manifest.key), uid=str(uuid.uuid4()))
            log.add(outcome.event, "dsctl")
        for _ in range(100_000):  # reconcile until nothing is due (bounded: a rollout takes ~50 rounds)
            log.t += 0.5
            due = False
            for name in names:
                result = reconcile(log.state, f"default/{name}", log.t)
                if result.decision is None:
                    continue
                due = True
                decisions += 1
                log.add(msgspec.structs.replace(result.decision, leader="bench"), "engine")
                for cmd in result.decision.commands:
                    if version == 2 and lost < lose and isinstance(cmd, CreatePod):
                        lost += 1  # its executor never answers
                        continue
                    report(log, cmd)
            await log.flush(at_least=20_000)
            if not due:
                if any(log.t < c.issued_at + 300 for c in log.state.in_flight.values()):
                    log.t += 301  # waiting on lost commands: let their window pass, as the engine would
                    continue
                break
        print(f"  rollout {version}: {log.seq:,} events, {decisions:,} decisions", flush=True)
    await log.flush()
    return decisions, lost


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--daemonsets", type=int, default=10)
    parser.add_argument("--lose", type=int, default=3)
    parser.add_argument("--store", help="keep the server's store here; a store with a log is reused as is")
    parser.add_argument(
        "--run", default="-m engine.cli replay verify", help="what to time, as python arguments"
    )
    args = parser.parse_args()
    with EmbeddedNats(store_dir=args.store) as server:
        nc = await connect(NatsSettings(servers=[server.url]))
        await apply_definitions(nc)
        store = JetStreamEventStore(nc)
        if await store.last_seq() == 0:
            log = Log(store)
            started = time.perf_counter()
            decisions, lost = await build(log, args.events, args.nodes, args.daemonsets, args.lose)
            print(
                f"log: {log.seq:,} events ({decisions:,} decisions, {lost} creates never answered) built "
                f"in {time.perf_counter() - started:.0f}s"
            )
        else:
            print(f"log: {await store.last_seq():,} events, reused from {args.store}")
        await store.close()
        await close(nc)
        env = dict(os.environ, NATS_URL=server.url)
        command = ["/usr/bin/time", "-v", sys.executable, *args.run.split()]
        t = time.perf_counter()
        r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
        print(r.stdout[-3000:])
        print(f"`python {args.run}` exit {r.returncode}, wall {wall:.1f}s, "
              f"peak RSS {int(rss.group(1)) / 1024 if rss else float('nan'):.0f} MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
