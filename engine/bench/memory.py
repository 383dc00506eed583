"""``memory``: peak RSS of a separate process running the engine and a fleet executor at N x M pods.

The log is prepared first (``workload.History(...).converge()``: every pod created and Ready), then the
child process starts the engine (which replays the whole log into its projection), the fleet executor
(which rebuilds its pods from the log) and waits until the controller has reconciled everything and
stayed idle; it reports its own ``VmHWM``. The baseline is the same interpreter with the same imports
and nothing loaded."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from engine.bench.common import Row, Target, nats_server
from engine.bench.workload import History, batched
from engine.store.event_store import JetStreamEventStore


async def _child(*args: str, timeout: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.bench.memproc",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {args[0]} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    report: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return report


async def memory(quick: bool) -> list[Row]:
    nodes, daemonsets = (500, 4) if quick else (5_000, 20)
    bare = await _child("bare", timeout=60)
    async with nats_server() as (server, nc):
        store = JetStreamEventStore(nc)
        try:
            for chunk in batched(History(nodes, daemonsets).converge(), 10_000):
                await store.append_many(chunk)
            events = await store.last_seq()
        finally:
            await store.close()
        report = await _child("engine", "--url", server.url, timeout=300 if not quick else 60)
    pods = int(report["pods"])
    peak = report["VmHWM"] / 1024
    return [
        Row(
            "memory",
            f"peak RSS, engine + fleet executor, {nodes:,} nodes x {daemonsets} DS = {pods:,} pods "
            f"({events:,} events replayed)",
            peak,
            "MB",
            baseline=bare["VmHWM"] / 1024,
            baseline_label="python + the same imports, nothing loaded",
            target=Target("<=", 300.0),
            note=f"RSS at rest {report['VmRSS'] / 1024:.0f} MB; ready in {float(report['seconds']):.1f} s"
            + ("" if report.get("settled") else "; controller never went idle"),
            extra={"per_pod_kb": (report["VmHWM"] - bare["VmHWM"]) / max(1, pods)},
        ),
    ]
