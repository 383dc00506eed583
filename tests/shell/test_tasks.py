"""Stopping tasks for sure: a task that swallows one cancellation (as asyncio.wait_for on 3.11 can,
inside nats-py's requests) is cancelled again, and one that never ends does not hang the caller."""

from __future__ import annotations

import asyncio
import contextlib
import time

from engine.runtime import tasks


async def _swallows_once() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await asyncio.sleep(60)  # carries on as if nothing happened


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    task = asyncio.ensure_future(_swallows_once())
    await asyncio.sleep(0)
    await tasks.stop([task], timeout=5)
    assert task.cancelled()


async def test_a_task_that_will_not_stop_costs_the_caller_at_most_the_timeout() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    await tasks.stop([task], timeout=0.3)
    assert time.monotonic() - started < 5 and not task.done()
    release.set()
    await task


async def test_an_error_a_task_ended_with_is_read() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    await tasks.stop([task])
    assert isinstance(task.exception(), RuntimeError)
