"""Executor leases against a real nats-server: one executor per node, a clear error for the second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from engine.store.lease import NODE_LEASE_BUCKET, ExecutorLease, LeaseHeld, LeaseLost

pytestmark = pytest.mark.integration


async def _kv(nc: Any) -> Any:
    return await nc.jetstream().key_value(NODE_LEASE_BUCKET)


async def test_a_second_executor_for_a_node_is_refused_naming_the_holder(nc: Any, streams: Any) -> None:
    kv = await _kv(nc)
    first = ExecutorLease(kv, "p1", "host-a-101", ttl=5)
    await first.acquire(wait=0)
    assert first.held.is_set()
    second = ExecutorLease(kv, "p1", "host-b-202", ttl=5)
    started = time.monotonic()
    with pytest.raises(LeaseHeld, match=r"node p1 is already served by executor host-a-101"):
        await second.acquire(wait=0.5)
    assert 0.4 <= time.monotonic() - started < 3
    other_node = ExecutorLease(kv, "p2", "host-b-202", ttl=5)
    await other_node.acquire(wait=0)  # a lease is per node
    await first.release()
    await second.acquire(wait=0)  # a clean stop hands the node over at once
    await second.release()
    await other_node.release()


async def test_a_waiting_executor_takes_over_when_the_holder_stops(nc: Any, streams: Any) -> None:
    kv = await _kv(nc)
    first = ExecutorLease(kv, "p1", "a", ttl=5)
    await first.acquire(wait=0)
    second = ExecutorLease(kv, "p1", "b", ttl=5)
    waiting = asyncio.ensure_future(second.acquire(wait=10))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await first.release()
    await asyncio.wait_for(waiting, timeout=5)
    assert second.held.is_set()
    await second.release()


async def test_an_expired_lease_is_retaken_but_one_taken_by_another_is_lost(nc: Any, streams: Any) -> None:
    kv = await _kv(nc)
    mine = ExecutorLease(kv, "p1", "a", ttl=5)
    await mine.acquire(wait=0)
    await kv.delete("p1")  # as if it had expired while we were cut off
    await mine.confirm()
    assert mine.held.is_set()
    assert (await kv.get("p1")).value == b"a"
    await kv.delete("p1")
    await kv.create("p1", b"b")  # and someone else took it meanwhile
    with pytest.raises(LeaseLost, match="executor b"):
        await mine.confirm()
    assert not mine.held.is_set()


async def test_an_executor_whose_node_is_taken_over_stops_serving_it(nc: Any, streams: Any) -> None:
    from engine.executor.drivers.sim import SimDriver
    from engine.executor.run import run_executor

    ready = asyncio.Event()
    task = asyncio.ensure_future(run_executor(nc, SimDriver(), node="n9", ready=ready, holder="first"))
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        kv = await _kv(nc)
        assert (await kv.get("n9")).value == b"first"
        await kv.delete("n9")
        await kv.create("n9", b"usurper")
        with pytest.raises(LeaseLost, match="executor usurper"):
            await asyncio.wait_for(task, timeout=10)
        assert (await kv.get("n9")).value == b"usurper"  # the loser does not delete the winner's key
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, LeaseLost):
            await task
