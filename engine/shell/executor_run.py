"""An executor process: rebuild what the log says about the served nodes, then carry out commands until
cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from nats.aio.client import Client

from engine.shell.command_source import JetStreamCommandSource
from engine.shell.drivers.base import Driver
from engine.shell.executor import Executor, LogReporter
from engine.shell.projector import Projector
from engine.shell.reports import BatchingAppender
from engine.shell.store import EventStore, JetStreamEventStore
from events.subjects import PREFIX, token
from events.types import PodEvent
from projections.model import ClusterState

log = structlog.get_logger("dsctl.executor")


async def applied_commands(store: EventStore, nodes: Sequence[str] | None) -> set[str]:
    """Every command id the log shows was carried out on these nodes (all nodes if None)."""
    subjects = [f"{PREFIX}.pod.>"] if nodes is None else [f"{PREFIX}.pod.{token(n)}.>" for n in nodes]
    ids: set[str] = set()
    async with contextlib.aclosing(store.read(subjects=subjects)) as events:
        async for stored in events:
            data = stored.envelope.data
            if isinstance(data, PodEvent) and data.command_id:
                ids.add(data.command_id)
    return ids


async def run_executor(
    nc: Client,
    driver: Driver,
    *,
    node: str | None = None,
    store: EventStore | None = None,
    state: ClusterState | None = None,
    source_name: str | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve one node (or the fleet, ``node=None``) until cancelled."""
    store = store or JetStreamEventStore(nc)
    appender = BatchingAppender(store, source_name or f"executor/{node or 'fleet'}")
    executor = Executor(
        driver, LogReporter(appender, appender.source), nodes=None if node is None else frozenset({node})
    )
    if state is None:
        projector = Projector(store)
        await projector.load()
        state = projector.state
    resume = executor.recover(state)
    executor.applied |= await applied_commands(store, None if node is None else [node])
    source = JetStreamCommandSource(nc, node=node)
    await source.ensure_consumer()
    if ready is not None:
        ready.set()
    started = time.monotonic()
    log.info("executor.started", node=node or "fleet", pods=len(executor.pods), resumed=len(resume))
    try:
        await executor.resume(resume)
        await executor.run(source)
    finally:
        await source.close()
        await executor.close()
        await appender.close()
        log.info(
            "executor.stopped",
            node=node or "fleet",
            handled=executor.handled,
            seconds=round(time.monotonic() - started, 1),
        )


def log_dir(base: str | Path | None) -> Path:
    return Path(base) if base is not None else Path(".dsctl") / "pods"
