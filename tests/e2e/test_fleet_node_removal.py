"""A fleet executor lets go of a removed node's pods (engine/executor/node_removals.py): through a real
nats-server, the engine and a fleet executor, a node removed with pods on it leaves nothing behind in the
executor, nothing more is reported about those pods (not even by a reconnect's re-assertion), and a node
registered again under the same name is a fresh node that gets a pod of its own, placed and Ready.
Also the bound on the ids of commands an executor remembers (``RecentIds``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from engine.executor.drivers.sim import SimDriver
from engine.executor.executor import Executor, RecentIds
from engine.executor.run import run_executor
from events.subjects import pod_reports
from events.types import NodeRemoved
from tests.e2e.harness import Cluster, nodes_yaml, pods_of, running_nodes

DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: agent, image: agent:1}
"""


async def until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def fleet(nc: Any, streams: Any) -> AsyncIterator[tuple[Cluster, Executor, SimDriver]]:
    cluster = await Cluster(nc).start(executor=False)
    driver = SimDriver()
    held: dict[str, Executor] = {}
    ready = asyncio.Event()
    task = asyncio.ensure_future(
        run_executor(nc, driver, store=cluster.store, state=cluster.state, ready=ready, executors=held)
    )
    try:
        await asyncio.wait_for(ready.wait(), timeout=15)
        yield cluster, next(iter(held.values())), driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await cluster.stop()


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_removed_node_is_forgotten_and_a_node_of_the_same_name_is_fresh(
    fleet: tuple[Cluster, Executor, SimDriver],
) -> None:
    cluster, executor, driver = fleet
    await cluster.apply(nodes_yaml("r1", "r2", "r3"))
    await cluster.apply(DAEMONSET)
    await cluster.wait("a ready pod on every node", lambda s: running_nodes(s, "agent") == ["r1", "r2", "r3"])
    old = next(p for p in pods_of(cluster.state, "agent") if p.node == "r2")
    await until("the executor holds r2's pod", lambda: old.key in executor.pods)

    await cluster.nodes.remove("r2")
    await cluster.wait("r2 and its pod gone from the projection", lambda s: "r2" not in s.nodes)
    await until("the executor let go of r2's pods", lambda: executor.forgotten >= 1)
    assert [p.key for p in executor.pods.values() if p.node == "r2"] == []
    assert old.key not in driver._tasks  # its simulated life ended
    assert old.key not in executor.detached  # the simulator forgets, it does not keep
    removed_at = executor.removed["r2"]  # the removal's own log position
    assert isinstance((await cluster.store.get(removed_at)).envelope.data, NodeRemoved)
    # what a reconnect does: report every pod again; the removed node's pod is not among them
    assert await executor.reassert() == len(executor.pods) == 2

    await cluster.apply(nodes_yaml("r2"))
    await cluster.wait(
        "a fresh ready pod on the re-registered r2",
        lambda s: (
            running_nodes(s, "agent") == ["r1", "r2", "r3"]
            and all(p.uid != old.uid for p in pods_of(s, "agent") if p.node == "r2")
        ),
    )
    fresh = next(p for p in pods_of(cluster.state, "agent") if p.node == "r2")
    assert fresh.ready and fresh.uid != old.uid
    held = executor.pods.get(fresh.key)
    assert held is not None and held.uid == fresh.uid and held.node == "r2"

    # nothing was reported about the removed pod after its node's removal (its reports carry its
    # create command's id): the re-assertion above and the forgetting stayed silent
    after = [
        s.envelope.data
        async for s in cluster.store.read(start_seq=removed_at + 1, subjects=[pod_reports("r2")])
    ]
    assert after, "the fresh pod's reports are there"
    assert [e.TAG for e in after if getattr(e, "command_id", "") == old.command_id] == []


@pytest.mark.parametrize(
    ("limit", "added", "kept", "forgotten"),
    [
        (3, ["a", "b", "c"], ["a", "b", "c"], []),
        (3, ["a", "b", "c", "d"], ["b", "c", "d"], ["a"]),
        (3, ["a", "a", "b", "a", "c"], ["a", "b", "c"], []),  # a repeat does not take a second place
        (2, ["a", "b", "c", "d", "e"], ["d", "e"], ["a", "b", "c"]),
        (1, ["a", "b"], ["b"], ["a"]),
    ],
)
def test_applied_ids_keep_the_last_n(
    limit: int, added: list[str], kept: list[str], forgotten: list[str]
) -> None:
    ids = RecentIds(limit)
    for item in added:
        ids.add(item)
    assert len(ids) == len(kept)
    assert all(k in ids for k in kept)
    assert not any(f in ids for f in forgotten)


def test_applied_ids_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)
