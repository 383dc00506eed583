"""An executor process: take the node's lease, rebuild what the log says about the served nodes, restore
them, then carry out commands until cancelled.

The order matters:

1. **Lease first.** One executor serves a node at a time (``ExecutorLease``, bucket ``dse_node_leases``,
   key = the node; a fleet holds ``_fleet``). A second executor waits ``lease_wait`` seconds (by default
   the bucket TTL plus a second: long enough for a crashed predecessor's key to expire, short enough
   that a second live executor fails soon with an error naming the holder). Rebuilding before holding
   the lease could read a log the predecessor is still writing.
2. **Rebuild, restore, then serve.** ``Executor.recover`` + ``restore``: re-attach to running
   processes, report the ones that died while no executor watched, finish interrupted deletes.
3. **While serving**, three tasks run beside the command loop: the lease renewal (``keep``; commands are
   fetched only while the lease is confirmed), a connection watch that, after nats-py reconnects,
   confirms the lease and then reports every pod's state again (``Executor.reassert``, idempotent by
   report id), and for a fleet, a poll of the node leases so the fleet leaves alone the nodes that have
   an executor of their own (otherwise both would act on that node's commands).
4. **At a stop** the pods keep running (``stop_pods_on_exit`` stops them and reports them failed);
   reports are flushed, then the lease is released last, so a successor starts at once and reads a
   complete log. A lease lost to another executor stops this one with ``LeaseLost`` and never stops
   the pods: the new holder may already have re-attached to them.

**A fleet beside node executors.** A fleet's durable sees every node's commands, so for a node that has
an executor of its own both would act. The fleet therefore polls the node leases (every second) and
leaves alone every node it has seen leased, for the rest of its life: a node executor that restarts
leaves its real processes running, and a fleet taking the node over meanwhile would report simulated
lives for them and never stop them. A node executor that finds a fleet running waits two poll periods
after taking its lease and before reporting anything, so the fleet has stopped acting on the node by
then. (Fleets are simulations; this handshake is by timing, not fenced.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError

from engine.executor.command_source import JetStreamCommandSource
from engine.executor.drivers.base import Driver
from engine.executor.executor import Executor, LogReporter
from engine.executor.reports import BatchingAppender
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.lease import FLEET_KEY, NODE_LEASE_BUCKET, ExecutorLease, LeaseLost
from engine.store.port import EventStore
from engine.store.projector import Projector
from engine.store.setup import EXECUTOR_NEEDS, MissingStreams, check
from events.errors import DsctlError, TransientError
from events.subjects import pod_reports
from events.types import PodEvent
from projections.model import ClusterState

log = structlog.get_logger("dsctl.executor")

#: how often the connection watch looks at nats-py's reconnect count
RECONNECT_POLL_SECONDS = 0.5
#: how often a fleet re-reads which nodes have an executor of their own
FLEET_EXCLUSION_POLL_SECONDS = 1.0


async def applied_commands(store: EventStore, nodes: Sequence[str] | None) -> set[str]:
    """Every command id the log shows was carried out on these nodes (all nodes if None)."""
    subjects = [pod_reports()] if nodes is None else [pod_reports(n) for n in nodes]
    ids: set[str] = set()
    async with contextlib.aclosing(store.read(subjects=subjects)) as events:
        async for stored in events:
            data = stored.envelope.data
            if isinstance(data, PodEvent) and data.command_id:
                ids.add(data.command_id)
    return ids


def default_holder() -> str:
    """How an executor names itself in its lease (and so in the second executor's error)."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def node_lease(nc: Client, node: str | None, holder: str | None = None) -> ExecutorLease:
    js = nc.jetstream()
    try:
        kv = await js.key_value(NODE_LEASE_BUCKET)
    except BucketNotFoundError:
        raise MissingStreams([f"KV_{NODE_LEASE_BUCKET}"]) from None
    status = await kv.status()
    ttl = float(status.ttl or 5.0)
    return ExecutorLease(kv, FLEET_KEY if node is None else node, holder or default_holder(), ttl)


async def run_executor(
    nc: Client,
    driver: Driver,
    *,
    node: str | None = None,
    store: EventStore | None = None,
    state: ClusterState | None = None,
    source_name: str | None = None,
    ready: asyncio.Event | None = None,
    stop_pods_on_exit: bool = False,
    lease_wait: float | None = None,
    holder: str | None = None,
) -> None:
    """Serve one node (or the fleet, ``node=None``) until cancelled.

    Raises ``LeaseHeld`` when another executor keeps the node past ``lease_wait`` seconds (None: the
    lease TTL plus a second), and ``LeaseLost`` when another executor takes it over.
    """
    # an executor only checks the store (engine/store/setup.py): the engine owns its shape
    await check(nc, needs=EXECUTOR_NEEDS)
    lease = await node_lease(nc, node, holder)
    await lease.acquire(lease.ttl + 1.0 if lease_wait is None else lease_wait)
    # renewed from now on: rebuilding a long log or stopping strays may well outlast the TTL
    keeper = asyncio.ensure_future(lease.keep())
    lost = False
    try:
        store = store or JetStreamEventStore(nc)
        appender = BatchingAppender(store, source_name or f"executor/{node or 'fleet'}")
        executor = Executor(
            driver,
            LogReporter(appender, appender.source),
            nodes=None if node is None else frozenset({node}),
        )
        try:
            if node is None:
                await _exclude_leased_nodes(lease, executor)
            elif FLEET_KEY in await lease.keys():
                log.info("executor.waiting_for_fleet", node=node, seconds=2 * FLEET_EXCLUSION_POLL_SECONDS)
                await asyncio.sleep(2 * FLEET_EXCLUSION_POLL_SECONDS)
            if state is None:
                projector = Projector(store)
                await projector.load()
                state = projector.state
            resume = executor.recover(state)
            executor.applied |= await applied_commands(store, None if node is None else [node])
            source = JetStreamCommandSource(nc, node=node, gate=lease.held)
            await source.ensure_consumer()
            started = time.monotonic()
            log.info(
                "executor.started",
                node=node or "fleet",
                holder=lease.holder,
                pods=len(executor.pods),
                resumed=len(resume),
            )
            try:
                await executor.restore(resume)
                if ready is not None:
                    ready.set()
                await _serve(nc, executor, source, lease, keeper)
            except LeaseLost as err:
                lost = True
                log.error("executor.lease_lost", key=lease.key, error=str(err))
                raise
            finally:
                await source.close()
                log.info(
                    "executor.stopped",
                    node=node or "fleet",
                    handled=executor.handled,
                    seconds=round(time.monotonic() - started, 1),
                    pods_stopped=stop_pods_on_exit and not lost,
                )
        finally:
            await executor.close(stop_pods=stop_pods_on_exit and not lost)
            await appender.close()
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # a LeaseLost was raised above
            await keeper
        if not lost:
            await lease.release()


async def _serve(
    nc: Client,
    executor: Executor,
    source: JetStreamCommandSource,
    lease: ExecutorLease,
    keeper: asyncio.Task[None],
) -> None:
    """Run the command loop and its companions until cancelled or one of them fails (LeaseLost);
    ``keeper`` (the lease renewal) was started before the rebuild."""
    tasks: list[asyncio.Task[Any]] = [
        asyncio.ensure_future(executor.run(source)),
        keeper,
        asyncio.ensure_future(_reassert_after_reconnects(nc, executor, lease)),
    ]
    if executor.nodes is None:
        tasks.append(asyncio.ensure_future(_poll_exclusions(lease, executor)))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        err = None if task.cancelled() else task.exception()
        if err is not None:
            raise err


async def _reassert_after_reconnects(nc: Client, executor: Executor, lease: ExecutorLease) -> None:
    """After each reconnect: confirm the lease (raises LeaseLost), then report every pod's state again.

    nats-py counts reconnects in ``nc.stats``; polling it keeps this independent of the callbacks the
    connection was opened with. A confirmation that fails for a transient reason is retried on the next
    poll.
    """
    seen = nc.stats["reconnects"]
    while True:
        await asyncio.sleep(RECONNECT_POLL_SECONDS)
        count = nc.stats["reconnects"]
        if count == seen or not nc.is_connected:
            continue
        try:
            await lease.confirm()
        except TransientError as err:
            log.warning("executor.reconnect_unconfirmed", error=str(err))
            continue
        seen = count
        pods = await executor.reassert()
        log.info("executor.reasserted", pods=pods, reconnects=count)


async def _exclude_leased_nodes(lease: ExecutorLease, executor: Executor) -> None:
    excluded = executor.excluded | frozenset(k for k in await lease.keys() if k != FLEET_KEY)
    if excluded != executor.excluded:
        log.info("executor.fleet_excludes", nodes=sorted(excluded))
        executor.excluded = excluded


async def _poll_exclusions(lease: ExecutorLease, executor: Executor) -> None:
    while True:
        await asyncio.sleep(FLEET_EXCLUSION_POLL_SECONDS)
        try:
            await _exclude_leased_nodes(lease, executor)
        except DsctlError as err:
            log.warning("executor.fleet_exclusions_unavailable", error=str(err))
        except Exception as err:  # nats-py errors while disconnected: keep the last known set
            log.warning("executor.fleet_exclusions_unavailable", error=str(err))


def log_dir(base: str | Path | None) -> Path:
    return Path(base) if base is not None else Path(".dsctl") / "pods"


def state_dir(base: str | Path | None) -> Path:
    """Where a process executor keeps its pid records (per node below it) [.dsctl/executor]."""
    return Path(base) if base is not None else Path(".dsctl") / "executor"
