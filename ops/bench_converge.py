#!/usr/bin/env python
"""Time to converge N simulated nodes x M DaemonSets (engine + fleet executor in one process, on its own
embedded nats-server): from applying the DaemonSets to every pod Ready.

Usage: .venv/bin/python ops/bench_converge.py NODES DAEMONSETS      (e.g. 1000 3, or 5000 10)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from engine.store.connection import close, connect
from engine.store.embedded import EmbeddedNats
from engine.store.settings import NatsSettings
from tests.e2e.harness import Cluster, nodes_yaml

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ds{i}}}
spec:
  selector: {{matchLabels: {{app: ds{i}}}}}
  template:
    metadata: {{labels: {{app: ds{i}}}}}
    spec: {{containers: [{{name: c, image: example/ds{i}:1}}]}}
"""


async def main(nodes: int, daemonsets: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with EmbeddedNats() as server:
        nc = await connect(NatsSettings(servers=[server.url]))
        c = await Cluster(nc, lease_ttl=5).start()
        for start in range(0, nodes, 500):
            await c.apply(nodes_yaml(*[f"n{i}" for i in range(start, min(nodes, start + 500))]))
        t0 = time.perf_counter()
        await c.apply("---\n".join(DS.format(i=i) for i in range(daemonsets)))
        want = nodes * daemonsets
        await c.wait("all Ready", lambda s: sum(1 for p in s.pods.values() if p.ready) == want, timeout=600)
        dt = time.perf_counter() - t0
        m = c.engine.metrics if c.engine is not None else None
        print(
            f"{nodes} nodes x {daemonsets} DaemonSets = {want} pods Ready in {dt:.2f} s ({want / dt:,.0f} pods/s);"
            f" log seq {c.state.seq}; reconciles {m.reconciles if m else '?'}, decisions {m.decisions if m else '?'}"
        )
        await c.stop()
        await close(nc)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
