"""Helpers for tests that take the NATS server away mid-test: wait for a condition, kill the server and
wait until the client has noticed, and cancel the callers a test left waiting.

Shared so that every outage test waits the same way (polling with a bound, never a bare sleep that
hopes the client has caught up)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from tests.conftest import TestServer


async def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` every 20 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def down(nats_server: TestServer, nc: Any) -> None:
    """Kill the server and wait until the client knows (from then on appends fail at once)."""
    await nats_server.kill()
    await until("the client to notice", lambda: bool(nc.is_reconnecting))


async def cancel_all(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel what a failed test left waiting and wait for it, so no task outlives its test."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
