"""One process of the ``fanout`` scenario (``python -m engine.bench.fanout_worker``): many node executors,
each with its own lease, checkpoint and feed, over a few shared connections.

The executors are the product's own (``run_executor`` with a shared ``ExecutorContext`` per connection);
only the driver is simulated. The bench talks to this process over plain NATS requests on
``_bench.fanout.<worker>.<verb>``:

- ``status``: how many executors run, hold their lease, and have read since a given time;
- ``deliveries``: every command first read since the last call, as ``[decision_seq, kind, wall time,
  the command's store time]``.

Stdout gets one JSON line when every executor has started (or failed to).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import signal
import sys
import time
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.bench.common import FANOUT_CONTROL
from engine.executor.command_feed import CommandFeed
from engine.executor.drivers.sim import SimDriver
from engine.executor.executor import Delivery
from engine.executor.run import ExecutorContext, executor_context, run_executor, start_state
from engine.runtime.gc_tuning import tune_gc
from engine.store.connection import close, connect
from engine.store.settings import NatsSettings

CONTROL_PREFIX = FANOUT_CONTROL


class Worker:
    def __init__(self, name: str, nodes: list[str], connections: list[Client], poll_seconds: float) -> None:
        self.name = name
        self.poll_seconds = poll_seconds
        self.nodes = nodes
        self.connections = connections
        self.contexts: list[ExecutorContext] = []
        self.feeds: dict[str, CommandFeed] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.failed: dict[str, str] = {}
        self.seen: list[tuple[int, str, float, str]] = []

    def observe(self, delivery: Delivery) -> None:
        kind = type(delivery.command).__name__ if delivery.command is not None else "malformed"
        self.seen.append((delivery.decision_seq, kind, time.time(), delivery.sent_at))

    def _done(self, node: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        err = task.exception()
        self.failed[node] = "stopped" if err is None else f"{type(err).__name__}: {err}"

    async def start(self, holder: str) -> None:
        for nc in self.connections:
            self.contexts.append(await executor_context(nc))
        state = await start_state(self.connections[0], self.contexts[0].store)
        for i, node in enumerate(self.nodes):
            ctx = self.contexts[i % len(self.contexts)]
            ready = asyncio.Event()
            self.started[node] = ready
            task = asyncio.ensure_future(
                run_executor(
                    ctx.nc,
                    SimDriver(ready_after=0.0),
                    node=node,
                    state=state,
                    context=ctx,
                    ready=ready,
                    holder=f"{holder}-{node}",
                    feeds=self.feeds,
                    observe=self.observe,
                    source_name=f"executor/{node}",
                    poll_seconds=self.poll_seconds,
                )
            )
            task.add_done_callback(functools.partial(self._done, node))
            self.tasks[node] = task

    async def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(e.is_set() for e in self.started.values()) + len(self.failed) >= len(self.nodes):
                return
            await asyncio.sleep(0.2)

    def status(self, since: float) -> dict[str, Any]:
        held = sum(1 for feed in self.feeds.values() if feed.allowed)
        return {
            "worker": self.name,
            "nodes": len(self.nodes),
            "started": sum(e.is_set() for e in self.started.values()),
            "held": held,
            "read_since": sum(1 for f in self.feeds.values() if f.last_read_at >= since),
            "connected": sum(1 for nc in self.connections if nc.is_connected),
            "failed": len(self.failed),
            "cpu_seconds": time.process_time(),
            "failures": dict(list(self.failed.items())[:5]),
        }

    async def serve_control(self, nc: Client) -> None:
        async def status(msg: Msg) -> None:
            since = float(json.loads(msg.data or b"{}").get("since", 0.0))
            await msg.respond(json.dumps(self.status(since)).encode())

        async def deliveries(msg: Msg) -> None:
            seen, self.seen = self.seen, []
            await msg.respond(json.dumps(seen).encode())

        await nc.subscribe(f"{CONTROL_PREFIX}.{self.name}.status", cb=status)
        await nc.subscribe(f"{CONTROL_PREFIX}.{self.name}.deliveries", cb=deliveries)

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.wait(list(self.tasks.values()), timeout=30)
        for ctx in self.contexts:
            await ctx.close()


async def _main(args: argparse.Namespace) -> int:
    urls = args.urls.split(",")
    nodes = [f"{args.prefix}-{i:05d}" for i in range(args.first, args.first + args.count)]
    connections = []
    for i in range(args.connections):
        rotated = urls[i % len(urls) :] + urls[: i % len(urls)]
        settings = NatsSettings(servers=rotated, name=f"bench-fanout-{args.name}-{i}")
        connections.append(await connect(settings))
    control = await connect(NatsSettings(servers=urls, name=f"bench-fanout-{args.name}-control"))
    worker = Worker(args.name, nodes, connections, args.poll_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    try:
        await worker.serve_control(control)
        await worker.start(args.name)
        await worker.wait_started(args.start_timeout)
        status = worker.status(0.0)
        status["seconds"] = round(time.monotonic() - started, 2)
        print(json.dumps(status), flush=True)
        await stop.wait()
    finally:
        await worker.stop()
        for nc in [*connections, control]:
            with contextlib.suppress(Exception):
                await close(nc)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.fanout_worker")
    parser.add_argument("--urls", required=True, help="comma-separated nats:// URLs")
    parser.add_argument("--name", required=True, help="this worker's name in the control subjects")
    parser.add_argument("--first", type=int, required=True, help="index of the first node served")
    parser.add_argument("--count", type=int, required=True, help="how many nodes to serve")
    parser.add_argument("--prefix", default="fan", help="node name prefix [fan]")
    parser.add_argument("--connections", type=int, default=4, help="NATS connections shared [4]")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--poll-seconds", type=float, default=60.0, help="the feeds' safety-net poll [60]")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    tune_gc()  # once per process, as `dsctl executor run` does
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
