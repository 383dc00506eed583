"""``dsctl bench reads``: CLI reads answered by a running engine's query service, next to the same
reads rebuilt from the log, in the same run (docs/console.md, "The query service").

A fleet of ``nodes`` x ``daemonsets`` converges under an engine and a simulated fleet in this process
(as ``dsctl bench convergence`` does); the query service is started beside the engine, and a second
connection plays the CLI: each read is the verb's own function with its output captured, once through
the service and once with ``DSCTL_QUERY=log`` (snapshot + tail, as ``dsctl get`` without an engine).
What is timed is what the command waits for once connected: the last sequence, the answer, printing.
Python's start-up and imports (what a ``dsctl`` process adds) are not in it; they are measured
separately by ``process`` below, once, for the service path.

The scenario lives in the CLI layer because it runs the CLI's verbs, which ``engine/bench`` may not
import (the layer contract in ``pyproject.toml``); it is registered from the command line's ``bench``.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

from engine.bench.common import Row, Target, nats_server
from engine.bench.live import LiveCluster
from engine.bench.workload import History
from engine.cli import get, served
from engine.cli.remote import MODE_ENV
from engine.query.service import serve_queries
from engine.store.connection import close, connect
from engine.store.event_store import JetStreamEventStore
from engine.store.settings import NatsSettings

Read = Callable[[TextIO, TextIO], Awaitable[int]]
TARGET = 0.2


async def _timed(read: Read, *, log: bool, repeat: int) -> tuple[float, int]:
    """Median seconds of ``repeat`` runs, and the bytes printed."""
    if log:
        os.environ[MODE_ENV] = "log"
    try:
        times = []
        size = 0
        for _ in range(repeat):
            out, err = io.StringIO(), io.StringIO()
            start = time.perf_counter()
            await read(out, err)
            times.append(time.perf_counter() - start)
            size = len(out.getvalue())
        return statistics.median(times), size
    finally:
        os.environ.pop(MODE_ENV, None)


async def _process(url: str, *args: str, module: bool = True) -> float:
    """Wall time of a whole ``dsctl`` process (interpreter, imports, connect, the read); the engine
    answering it runs on this event loop, so the process is awaited, not waited for."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *(["-m", "engine.cli"] if module else []), *args,
        env=dict(os.environ, NATS_URL=url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.wait_for(proc.wait(), timeout=120)
    return time.perf_counter() - start


async def _reads(nodes: int, daemonsets: int, repeat: int) -> list[Row]:
    history = History(nodes, daemonsets)
    async with nats_server() as (server, nc):
        cluster = LiveCluster(nc)
        await cluster.start()
        service = None
        client = await connect(NatsSettings(servers=[server.url], name="dsctl-bench-reads"))
        store = JetStreamEventStore(client)
        try:
            await cluster.append(list(history.register_nodes()))
            cluster.want_ready = nodes * daemonsets
            await cluster.append([history.apply(i) for i in range(daemonsets)])
            await cluster.all_ready.wait()
            await cluster.settle(quiet=0.5)
            await cluster.projector.save_snapshot()  # as a long-running engine would have one
            engine_answers = served.Answers(cluster.store, nc)
            service = await serve_queries(nc, cluster.projector, engine_answers.answer)
            events = await store.last_seq()
            all_ds = get.Query(kind="daemonsets", all_namespaces=True)
            all_pods = get.Query(kind="pods", all_namespaces=True)
            reads: list[tuple[str, Read]] = [
                ("get ds -A", lambda o, e: get.get(store, client, all_ds, "table", o, e)),
                ("get pods -A -o name", lambda o, e: get.get(store, client, all_pods, "name", o, e)),
                ("describe ds", lambda o, e: served.describe(store, client, "daemonsets", "agent-00",
                                                             "kube-system", o)),
            ]  # fmt: skip
            rows = []
            for label, read in reads:
                t_service, size = await _timed(read, log=False, repeat=repeat)
                t_log, size_log = await _timed(read, log=True, repeat=max(1, repeat // 3))
                rows.append(
                    Row(
                        "reads",
                        f"{label} at {nodes:,} nodes x {daemonsets} DS, via the query service",
                        t_service * 1000,
                        "ms",
                        baseline=t_log * 1000,
                        baseline_label=f"the same read rebuilt from the log (snapshot + tail of {events:,})",
                        target=Target("<=", TARGET * 1000, label=f"<= {TARGET:g} s"),
                        note=f"{size:,} bytes printed (log path: {size_log:,}); median of {repeat}",
                        extra={"service": t_service, "log": t_log, "bytes": size, "events": events},
                    )
                )
            wall = await _process(server.url, "get", "ds", "-A")
            bare = await _process(server.url, "-c", "pass", module=False)
            rows.append(
                Row(
                    "reads",
                    "whole `dsctl get ds -A` process via the service (interpreter start-up and imports too)",
                    wall,
                    "s",
                    baseline=bare,
                    baseline_label="`python -c pass`: the interpreter starting and exiting",
                    note="not a target: what a user waits for at the prompt",
                )
            )
            return rows
        finally:
            if service is not None:
                await service.stop()
            await store.close()
            await close(client)
            await cluster.stop()


async def reads(quick: bool) -> list[Row]:
    if quick:
        return await _reads(100, 3, 3)
    return await _reads(5_000, 10, 7)
