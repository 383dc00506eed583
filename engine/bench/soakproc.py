"""The process the ``soak`` scenario measures (``python -m engine.bench.soakproc --url URL``).

It runs what ``dsctl up`` runs on one machine, the engine (leader) and a simulated fleet executor, on
one event loop, for as long as the soak lasts, so its RSS is the engine's own and not the driver's or
the nats-server's. It answers requests on ``SOAK_CONTROL`` with one JSON object: ``VmRSS`` and
``VmHWM`` (kB), the projection's sequence, what the projection holds, and the controller's counters
(``objects``: also the number of objects the collector tracks; ``types``: only the counts of the
top 40 types; ``sizes``: only the lengths of the projection's and the controller's collections: to
find what grows).
It prints ``ready`` on stdout once it leads and the executor runs, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import signal
import sys
import tracemalloc
from typing import Any

import structlog

from engine.bench.common import SOAK_CONTROL, vm_status
from engine.runtime.parent_death import die_with_parent


async def _run(url: str) -> None:
    from nats.aio.msg import Msg

    from engine.bench.live import LiveCluster
    from engine.store.connection import close, connect
    from engine.store.settings import NatsSettings

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    nc = await connect(NatsSettings(servers=[url], name="dsctl-bench-soak-engine"))
    try:
        cluster = LiveCluster(nc)
        await cluster.start()
        baseline: list[tracemalloc.Snapshot] = []
        if os.environ.get("DSCTL_SOAK_TRACEMALLOC"):
            tracemalloc.start(8)

        async def report(msg: Msg) -> None:
            if msg.data == b"malloc":  # with DSCTL_SOAK_TRACEMALLOC=1: what grew since the first ask
                await msg.respond(json.dumps(_malloc_growth(baseline)).encode())
                return
            if msg.data == b"tasks":  # what the live tasks are running: to find what never ends
                names = collections.Counter(
                    getattr(t.get_coro(), "__qualname__", repr(t.get_coro())) for t in asyncio.all_tasks()
                )
                await msg.respond(json.dumps(dict(names.most_common(40))).encode())
                return
            if msg.data == b"types":  # what the heap holds, by type: to find what grows
                gc.collect()  # what is kept, not garbage not yet collected
                counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
                await msg.respond(json.dumps(dict(counts.most_common(40))).encode())
                return
            if msg.data == b"sizes":  # the projection's and the controller's collections, by length
                await msg.respond(json.dumps(_sizes(cluster)).encode())
                return
            state = cluster.projector.state
            metrics = cluster.engine.metrics
            body = {
                "seq": state.seq,
                "nodes": len(state.nodes),
                "pods": len(state.pods),
                "ready": sum(1 for pod in state.pods.values() if pod.ready),
                "daemonsets": len(state.daemonsets),
                "decisions": metrics.decisions,
                "reconciles": metrics.reconciles,
                "idle": cluster.idle(),
                "gc_objects": len(gc.get_objects()) if msg.data == b"objects" else None,
                **vm_status(),
            }
            await msg.respond(json.dumps(body).encode())

        sub = await nc.subscribe(SOAK_CONTROL, cb=report)
        await nc.flush()
        print("ready", flush=True)
        try:
            await stop.wait()
        finally:
            await sub.unsubscribe()
            await cluster.stop()
    finally:
        await close(nc)


def _malloc_growth(baseline: list[tracemalloc.Snapshot]) -> dict[str, Any]:
    """The allocation sites that grew most since the first ``malloc`` ask (which only takes the
    baseline): where a soak's RSS goes, including what the collector does not track (strings,
    ``gc=False`` structs)."""
    if not tracemalloc.is_tracing():
        return {"error": "start the soak with DSCTL_SOAK_TRACEMALLOC=1"}
    gc.collect()
    now = tracemalloc.take_snapshot()
    if not baseline:
        baseline.append(now)
        return {"baseline": sum(s.size for s in now.statistics("filename"))}
    top = now.compare_to(baseline[0], "traceback")[:15]
    return {
        "grown": [
            {"kib": round(d.size_diff / 1024, 1), "count": d.count_diff, "where": d.traceback.format()[-6:]}
            for d in top
        ]
    }


def _sizes(cluster: Any) -> dict[str, int]:
    """``len`` of every collection held by the projection, the controller and the executor (one level
    down, and per DaemonSet summed): where an hour of churn may leave something behind."""
    out: dict[str, int] = {}
    roots = {
        "state": cluster.projector.state,
        "controller": cluster.engine.controller,
        "scheduler": getattr(cluster.engine.controller, "scheduler", None),
        "engine": cluster.engine,
        "projector": cluster.projector,
    }
    for root, obj in roots.items():
        if obj is None:
            continue
        names = getattr(type(obj), "__struct_fields__", None) or list(vars(obj))
        for name in names:
            value = getattr(obj, name, None)
            if isinstance(value, dict | list | set | tuple | collections.deque):
                out[f"{root}.{name}"] = len(value)
            memo = getattr(value, "_by_key", None)
            if isinstance(memo, dict):
                out[f"{root}.{name}._by_key"] = len(memo)
    for ds in cluster.projector.state.daemonsets.values():
        for name in ds.__struct_fields__:
            value = getattr(ds, name)
            if isinstance(value, dict | list | set | tuple):
                out[f"daemonset.{name} (sum)"] = out.get(f"daemonset.{name} (sum)", 0) + len(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.soakproc")
    parser.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    die_with_parent()  # a killed soak driver must not leave the engine process running
    # the engine logs every reconcile at info: an hour of that would be measured too
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    asyncio.run(_run(args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
