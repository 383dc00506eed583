"""The key queue: dedupe, per-key exclusivity, timers, and workers that can always be cancelled."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.reconciler.workqueue import KeyQueue, QueueClosed


async def test_a_key_is_queued_once_and_requeued_once_if_added_while_active() -> None:
    q = KeyQueue(time.monotonic)
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    key = await q.get()
    assert key == "a"
    q.add("a")  # while active: not handed out again until done
    assert await asyncio.wait_for(q.get(), 1) == "b"
    q.done("b")
    q.done("a")
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_an_immediate_add_beats_a_timer_and_the_earlier_timer_wins() -> None:
    q = KeyQueue(time.monotonic)
    q.add_after("k", 10.0)
    q.add_after("k", 0.05)
    started = time.monotonic()
    assert await asyncio.wait_for(q.get(), 2) == "k"
    assert 0.04 <= time.monotonic() - started < 1.0
    q.done("k")
    q.add_after("k", 10.0)
    q.add("k")
    assert await asyncio.wait_for(q.get(), 0.5) == "k"
    assert q.scheduled("k") is None


async def test_a_waiting_worker_is_always_cancellable_even_as_it_is_woken() -> None:
    for _ in range(200):
        q = KeyQueue(time.monotonic)
        q.add_after("k", 0.001)
        worker = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        q.add("x")
        worker.cancel()
        done, _ = await asyncio.wait({worker}, timeout=1)
        assert done, "a cancelled get() kept running"


async def test_closing_wakes_every_worker() -> None:
    q = KeyQueue(time.monotonic)
    workers = [asyncio.ensure_future(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.close()
    for w in workers:
        with pytest.raises(QueueClosed):
            await asyncio.wait_for(w, 1)


async def test_an_urgent_key_goes_before_the_ones_already_waiting() -> None:
    q = KeyQueue(time.monotonic)
    for k in ("a", "b", "c"):
        q.add(k)
    q.add("c", urgent=True)
    q.add("d", urgent=True)
    got = [await asyncio.wait_for(q.get(), 1) for _ in range(4)]
    assert got == ["d", "c", "a", "b"]


async def test_a_cancelled_timer_does_not_fire() -> None:
    q = KeyQueue(time.monotonic)
    q.add_after("k", 0.05)
    q.cancel_timer("k")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.2)


async def test_an_urgent_add_while_active_keeps_its_urgency_when_the_key_is_requeued() -> None:
    # a node event for a key being reconciled must not queue behind everything added meanwhile
    q = KeyQueue(time.monotonic)
    q.add("busy")
    assert await q.get() == "busy"
    q.add("busy", urgent=True)  # while active: remembered, with its urgency
    for other in ("a", "b", "c"):
        q.add(other)
    q.done("busy")
    assert await asyncio.wait_for(q.get(), 1) == "busy"


async def test_a_plain_add_while_active_does_not_jump_the_queue() -> None:
    q = KeyQueue(time.monotonic)
    q.add("busy")
    assert await q.get() == "busy"
    q.add("busy")
    q.add("a")
    q.done("busy")
    assert await asyncio.wait_for(q.get(), 1) == "a"
