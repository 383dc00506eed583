"""An executor process: take the node's lease, rebuild what the log says about the served nodes, restore
them, then carry out commands until cancelled.

The order matters:

1. **Lease first.** One executor serves a node at a time (``ExecutorLease``, bucket ``dse_node_leases``,
   key = the node; a fleet holds ``_fleet``). A second executor waits ``lease_wait`` seconds (by default
   the bucket TTL plus a second: long enough for a crashed predecessor's key to expire, short enough
   that a second live executor fails soon with an error naming the holder). Rebuilding before holding
   the lease could read a log the predecessor is still writing.
2. **Rebuild, restore, then serve.** The state comes from the newest snapshot plus the log after it
   (not a full replay); ``Executor.recover`` + ``restore``: re-attach to running processes, report the
   ones that died while no executor watched, finish interrupted deletes. Commands are read from the
   node's checkpoint on (``CommandFeed``).
3. **While serving**, four tasks run beside the command loop: the answers to ``dsctl logs`` for the
   served nodes' pods (``pod_logs.py``; a failure there is logged and retried, it never stops the
   executor), the lease renewal (``keep``; commands are read only while the lease is confirmed), a
   reconnect watch that, after nats-py reconnects, confirms
   the lease, reports every pod's state again (``Executor.reassert``, idempotent by report id) and
   makes the feed read at once, and for a fleet, a poll of the node leases so the fleet leaves alone
   the nodes that have an executor of their own (otherwise both would act on that node's commands).
   Beside them, the process's tail of node removals (``node_removals.py``, one per context) tells the
   executor which served nodes the log removed, so it lets their pods go (``Executor.forget_node``).
4. **At a stop** the pods keep running (``stop_pods_on_exit`` stops them and reports them failed);
   reports are flushed, then the lease is released last, so a successor starts at once and reads a
   complete log. A lease lost to another executor stops this one with ``LeaseLost`` and never stops
   the pods: the new holder may already have re-attached to them.

**Many executors in one process** (the fan-out bench, a host serving several simulated nodes) share an
``ExecutorContext``: the store checked once, the buckets opened once, one reconnect watch per
connection, and optionally the state read at start.

**A fleet beside node executors.** A fleet's feed reads every node's commands, so for a node that has
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from engine.executor.command_feed import CommandFeed
from engine.executor.drivers.base import Driver
from engine.executor.executor import Delivery, Executor, LogReporter
from engine.executor.node_removals import RemovalTail
from engine.executor.pod_logs import PodLogServer
from engine.executor.reports import BatchingAppender
from engine.store.checkpoints import KvCheckpoints
from engine.store.definitions import CHECKPOINT_BUCKET, SNAPSHOTS_BUCKET
from engine.store.direct_get import DirectReader
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.lease import FLEET_KEY, NODE_LEASE_BUCKET, ExecutorLease, LeaseLost
from engine.store.port import EventStore
from engine.store.projector import ObjectSnapshots, Projector
from engine.store.setup import EXECUTOR_NEEDS, MissingStreams, check
from events.errors import DsctlError, NotFound, TransientError
from projections.model import ClusterState

log = structlog.get_logger("dsctl.executor")

#: how often the reconnect watch looks at nats-py's reconnect count
RECONNECT_POLL_SECONDS = 0.5
#: how often a fleet re-reads which nodes have an executor of their own
FLEET_EXCLUSION_POLL_SECONDS = 1.0
#: how long serving ``dsctl logs`` waits before trying again after a failure
LOGS_RETRY_SECONDS = 5.0


def default_holder() -> str:
    """How an executor names itself in its lease (and so in the second executor's error)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ReconnectWatch:
    """One per connection: polls nats-py's reconnect count (independent of the callbacks the connection
    was opened with) and wakes every executor waiting on it. One poller for any number of executors:
    10,000 executors polling on their own would wake the loop 20,000 times a second."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self.count: int = nc.stats["reconnects"]
        self._changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_POLL_SECONDS)
            count = self._nc.stats["reconnects"]
            if count != self.count and self._nc.is_connected:
                self.count = count
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()

    async def after(self, seen: int) -> int:
        """Wait until the connection has reconnected (again) since ``seen``; returns the new count."""
        while self.count == seen:
            await self._changed.wait()
        return self.count


@dataclass
class ExecutorContext:
    """What the executors of one process share (see the module notes)."""

    nc: Client
    store: EventStore
    leases: KeyValue
    lease_ttl: float
    checkpoints: KvCheckpoints
    watch: ReconnectWatch
    reader: DirectReader
    #: the node removals of the log, handed to every executor of the process (node_removals.py)
    removals: RemovalTail
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        await self.removals.close()
        with contextlib.suppress(DsctlError):
            await self.reader.close()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def executor_context(nc: Client, store: EventStore | None = None) -> ExecutorContext:
    """Check the store (an executor never creates or repairs it: the engine owns its shape) and open
    the buckets every executor needs; starts the reconnect watch (stopped by ``close``)."""
    await check(nc, needs=EXECUTOR_NEEDS)
    js = nc.jetstream()
    try:
        leases = await js.key_value(NODE_LEASE_BUCKET)
    except BucketNotFoundError:
        raise MissingStreams([f"KV_{NODE_LEASE_BUCKET}"]) from None
    status = await leases.status()
    try:
        checkpoints = await KvCheckpoints.open(js)
    except NotFound:
        raise MissingStreams([f"KV_{CHECKPOINT_BUCKET}"]) from None
    watch = ReconnectWatch(nc)
    event_store = store or JetStreamEventStore(nc)
    context = ExecutorContext(
        nc=nc,
        store=event_store,
        leases=leases,
        lease_ttl=float(status.ttl or 5.0),
        checkpoints=checkpoints,
        watch=watch,
        reader=DirectReader(nc),
        removals=RemovalTail(event_store),
    )
    task = asyncio.ensure_future(watch.run())
    task.add_done_callback(_watch_done)
    context.tasks.append(task)
    return context


def _watch_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("executor.reconnect_watch_failed", error=repr(task.exception()))


async def node_lease(nc: Client, node: str | None, holder: str | None = None) -> ExecutorLease:
    js = nc.jetstream()
    try:
        kv = await js.key_value(NODE_LEASE_BUCKET)
    except BucketNotFoundError:
        raise MissingStreams([f"KV_{NODE_LEASE_BUCKET}"]) from None
    status = await kv.status()
    ttl = float(status.ttl or 5.0)
    return ExecutorLease(kv, FLEET_KEY if node is None else node, holder or default_holder(), ttl)


async def start_state(nc: Client, store: EventStore) -> ClusterState:
    """The newest snapshot plus the log after it (the whole log when there is no snapshot)."""
    snapshots: ObjectSnapshots | None = None
    try:
        snapshots = ObjectSnapshots(await nc.jetstream().object_store(SNAPSHOTS_BUCKET))
    except Exception as err:  # no object store (or no right to read it): replay the log instead
        log.warning("executor.no_snapshot_store", error=str(err))
    projector = Projector(store, snapshots)
    await projector.load(use_snapshot=snapshots is not None)
    return projector.state


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
    context: ExecutorContext | None = None,
    poll_seconds: float = 60.0,
    feeds: dict[str, CommandFeed] | None = None,
    observe: Callable[[Delivery], None] | None = None,
    executors: dict[str, Executor] | None = None,
) -> None:
    """Serve one node (or the fleet, ``node=None``) until cancelled.

    Raises ``LeaseHeld`` when another executor keeps the node past ``lease_wait`` seconds (None: the
    lease TTL plus a second), and ``LeaseLost`` when another executor takes it over. ``context`` is
    shared by executors of one process (made and closed here when None); ``state``, when given, is the
    state read at start (else read here); ``feeds``, when given, receives this executor's feed under
    its node, and ``observe`` is told of each command as it is first read (the fan-out bench uses both);
    ``executors``, when given, receives the executor under the same key (tests look at what it holds).
    """
    own_context = context is None
    ctx = context or await executor_context(nc, store)
    try:
        await _run(
            ctx,
            driver,
            node=node,
            state=state,
            source_name=source_name,
            ready=ready,
            stop_pods_on_exit=stop_pods_on_exit,
            lease_wait=lease_wait,
            holder=holder,
            poll_seconds=poll_seconds,
            feeds=feeds,
            observe=observe,
            executors=executors,
        )
    finally:
        if own_context:
            await ctx.close()


async def _run(
    ctx: ExecutorContext,
    driver: Driver,
    *,
    node: str | None,
    state: ClusterState | None,
    source_name: str | None,
    ready: asyncio.Event | None,
    stop_pods_on_exit: bool,
    lease_wait: float | None,
    holder: str | None,
    poll_seconds: float,
    feeds: dict[str, CommandFeed] | None,
    observe: Callable[[Delivery], None] | None,
    executors: dict[str, Executor] | None,
) -> None:
    lease = ExecutorLease(
        ctx.leases, FLEET_KEY if node is None else node, holder or default_holder(), ctx.lease_ttl
    )
    await lease.acquire(lease.ttl + 1.0 if lease_wait is None else lease_wait)
    # renewed from now on: rebuilding a long log or stopping strays may well outlast the TTL
    keeper = asyncio.ensure_future(lease.keep())
    lost = False
    try:
        appender = BatchingAppender(ctx.store, source_name or f"executor/{node or 'fleet'}")
        executor = Executor(
            driver,
            LogReporter(appender, appender.source),
            nodes=None if node is None else frozenset({node}),
        )
        try:
            if node is None:
                await _exclude_leased_nodes(lease, executor)
            elif await lease.is_held(FLEET_KEY):
                log.info("executor.waiting_for_fleet", node=node, seconds=2 * FLEET_EXCLUSION_POLL_SECONDS)
                await asyncio.sleep(2 * FLEET_EXCLUSION_POLL_SECONDS)
            if state is None:
                state = await start_state(ctx.nc, ctx.store)
            resume = executor.recover(state)
            feed = CommandFeed(
                ctx.nc,
                ctx.checkpoints,
                node=node,
                holder=lease.holder,
                gate=lease.held,
                poll_seconds=poll_seconds,
                observe=observe,
                reader=ctx.reader,
            )
            checkpoint = await feed.start_position()
            if feeds is not None:
                feeds[feed.key] = feed
            if executors is not None:
                executors[feed.key] = executor
            started = time.monotonic()
            log.info(
                "executor.started",
                node=node or "fleet",
                holder=lease.holder,
                pods=len(executor.pods),
                resumed=len(resume),
                log_seq=state.seq,
                checkpoint=checkpoint,
            )
            try:
                await executor.restore(resume)
                if ready is not None:
                    ready.set()
                logs = PodLogServer(
                    ctx.nc, executor, node=node, responder=f"{node or 'fleet'}/{lease.holder}"
                )
                ctx.removals.register(executor)
                try:
                    await _serve(ctx, executor, feed, lease, keeper, logs)
                finally:
                    ctx.removals.unregister(executor)
            except LeaseLost as err:
                lost = True
                log.error("executor.lease_lost", key=lease.key, error=str(err))
                raise
            finally:
                await feed.close()
                log.info(
                    "executor.stopped",
                    node=node or "fleet",
                    handled=executor.handled,
                    checkpoint=feed.checkpoint,
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
    ctx: ExecutorContext,
    executor: Executor,
    feed: CommandFeed,
    lease: ExecutorLease,
    keeper: asyncio.Task[None],
    logs: PodLogServer,
) -> None:
    """Run the command loop and its companions until cancelled or one of them fails (LeaseLost);
    ``keeper`` (the lease renewal) was started before the rebuild."""
    tasks: list[asyncio.Task[Any]] = [
        asyncio.ensure_future(executor.run(feed)),
        keeper,
        asyncio.ensure_future(_serve_logs(logs)),
        asyncio.ensure_future(_reassert_after_reconnects(ctx.watch, executor, lease, feed)),
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


async def _serve_logs(logs: PodLogServer) -> None:
    """Answer ``dsctl logs`` until cancelled: reading logs is a convenience, so its failure (a
    subscription refused while disconnected) is logged and retried, and never stops the executor."""
    while True:
        try:
            await logs.run()
        except Exception as err:
            log.warning("executor.logs_unavailable", error=f"{type(err).__name__}: {err}")
        await asyncio.sleep(LOGS_RETRY_SECONDS)


async def _reassert_after_reconnects(
    watch: ReconnectWatch, executor: Executor, lease: ExecutorLease, feed: CommandFeed
) -> None:
    """After each reconnect: confirm the lease (raises LeaseLost), report every pod's state again and
    make the feed read at once (wake-ups sent while disconnected were lost). A confirmation that fails
    for a transient reason is retried a moment later."""
    seen = watch.count
    while True:
        count = await watch.after(seen)
        try:
            await lease.confirm()
        except TransientError as err:
            log.warning("executor.reconnect_unconfirmed", error=str(err))
            await asyncio.sleep(RECONNECT_POLL_SECONDS)
            continue
        seen = count
        feed.kick()
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
