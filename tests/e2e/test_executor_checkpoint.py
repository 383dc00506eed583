"""Executors start from the state at start plus their own checkpoint on DSE_COMMANDS (no consumer, no
scan of their reports): what a restarted executor reads again, it does not carry out again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.executor.command_feed import CommandFeed
from engine.executor.drivers.sim import SimDriver
from engine.executor.executor import Executor
from engine.executor.run import ExecutorContext, executor_context, run_executor
from engine.store.checkpoints import KvCheckpoints
from engine.store.jetstream_api import api_request
from events.k8s import Taint
from events.subjects import COMMANDS_STREAM, pod_reports
from events.types import CreatePod, DeletePod, PodEvent
from projections.model import ClusterState, InFlight
from tests.e2e.harness import Cluster, nodes_yaml, running_nodes
from tests.shell.test_controller import DS

pytestmark = pytest.mark.integration


class Forgetful:
    """Checkpoints that are read but never written: an executor that always crashed before writing."""

    def __init__(self, real: KvCheckpoints) -> None:
        self.real = real

    async def load(self, key: str) -> int:
        return await self.real.load(key)

    async def save(self, key: str, seq: int, holder: str) -> None:
        return None


class Counting(SimDriver):
    """A simulated node that counts the pods it was asked to start and stop."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []
        self.stopped: list[str] = []

    async def start(self, pod: Any, command_id: str, reporter: Any) -> None:
        self.started.append(pod.key)
        await super().start(pod, command_id, reporter)

    async def stop(self, pod: Any, command_id: str, reporter: Any, **kw: Any) -> None:
        self.stopped.append(pod.key)
        await super().stop(pod, command_id, reporter, **kw)


@contextlib.asynccontextmanager
async def _executor(
    ctx: ExecutorContext, feeds: dict[str, CommandFeed], driver: SimDriver | None = None
) -> AsyncIterator[None]:
    ready = asyncio.Event()
    drv = driver or SimDriver()
    task = asyncio.ensure_future(run_executor(ctx.nc, drv, context=ctx, ready=ready, feeds=feeds))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _reports(cluster: Cluster) -> list[str]:
    out = []
    async with contextlib.aclosing(cluster.store.read(subjects=[pod_reports()])) as events:
        async for stored in events:
            data = stored.envelope.data
            assert isinstance(data, PodEvent)
            out.append(f"{stored.envelope.type} {data.name}")
    return out


async def _last_command(nc: Any) -> int:
    info = await api_request(nc, f"STREAM.INFO.{COMMANDS_STREAM}")
    return int(info["state"]["last_seq"])


async def _caught_up(feed: CommandFeed, seq: int) -> None:
    for _ in range(300):
        if feed.next_seq > seq and feed.checkpoint >= seq:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the feed did not read up to {seq} (next {feed.next_seq}, at {feed.checkpoint})")


async def test_a_restarted_executor_reads_from_its_checkpoint_and_redoes_nothing(
    nc: Any, streams: Any
) -> None:
    cluster = await Cluster(nc).start(executor=False)
    ctx: ExecutorContext | None = None
    try:
        ctx = await executor_context(nc, cluster.store)
        real = ctx.checkpoints
        ctx.checkpoints = Forgetful(real)  # type: ignore[assignment]
        feeds: dict[str, CommandFeed] = {}
        async with _executor(ctx, feeds):
            await cluster.apply(nodes_yaml("node-a", "node-b"))
            await cluster.apply(DS.format(name="agent"))
            await cluster.wait(
                "pods on both nodes", lambda s: running_nodes(s, "agent") == ["node-a", "node-b"]
            )
            await cluster.nodes.taint("node-b", [Taint(key="dedicated", value="x", effect="NoExecute")], [])
            await cluster.wait("node-b's pod deleted", lambda s: running_nodes(s, "agent") == ["node-a"])
            await cluster.wait("nothing in flight", lambda s: not s.in_flight)
        assert await real.load("_fleet") == 0  # it never wrote one: the next executor reads everything
        before = await _reports(cluster)
        last = await _last_command(nc)
        assert last >= 3  # two creates and a delete

        # the next executor reads every command again, finds each answered in the state, does nothing
        # (the log alone would not show a redo: its reports repeat the first ones' ids, and the store
        # drops them as duplicates within its window; the simulated node shows it)
        ctx.checkpoints = real
        feeds.clear()
        node = Counting()
        async with _executor(ctx, feeds, node):
            await _caught_up(feeds["_fleet"], last)
            await asyncio.sleep(0.3)
            assert (node.started, node.stopped) == ([], [])
            assert await _reports(cluster) == before
            assert running_nodes(cluster.state, "agent") == ["node-a"]
        # its clean stop wrote the checkpoint: the one after it starts past every command
        assert await real.load("_fleet") == last
        feeds.clear()
        async with _executor(ctx, feeds):
            assert feeds["_fleet"].next_seq == last + 1
            # and it still serves: a new node gets its pod
            await cluster.apply(nodes_yaml("node-c"))
            await cluster.wait("node-c's pod runs", lambda s: "node-c" in running_nodes(s, "agent"))
    finally:
        if ctx is not None:
            await ctx.close()
        await cluster.stop()


def _in_flight(cmd_id: str) -> InFlight:
    return InFlight(
        command_id=cmd_id,
        kind="create_pod",
        ds_key="default/agent",
        node="node-a",
        namespace="default",
        pod_name="agent-x",
        issued_at=time.time(),
        decision_seq=10,
    )


@pytest.mark.parametrize(
    ("decision_seq", "in_flight", "skipped", "why"),
    [
        (10, False, True, "decided before the start and answered since"),
        (10, True, False, "decided before the start, still awaited: carry it out"),
        (21, False, False, "decided after the start: the state cannot know"),
        (0, False, False, "not from a decision (a user's delete pod)"),
        (20, False, True, "decided at the very sequence the state was read to"),
    ],
)
def test_answered_before_start(decision_seq: int, in_flight: bool, skipped: bool, why: str) -> None:
    state = ClusterState()
    state.seq = 20
    if in_flight:
        state.in_flight["c1"] = _in_flight("c1")
    executor = Executor(SimDriver(), reporter=None)  # type: ignore[arg-type]
    executor.recover(state)
    cmd = CreatePod(
        id="c1",
        node="node-a",
        namespace="default",
        pod_name="agent-x",
        pod_uid="u1",
        owner_uid="ds1",
        owner_name="agent",
        revision_hash="abc",
    )
    assert executor.answered_before_start(cmd, decision_seq) is skipped, why
    delete = DeletePod(id="c1", node="node-a", namespace="default", pod_name="agent-x", reason="test")
    assert executor.answered_before_start(delete, decision_seq) is skipped, why
