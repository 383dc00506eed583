"""Stopping background tasks for sure.

Why not ``task.cancel(); await task``: on Python 3.11, ``asyncio.wait_for`` (which nats-py uses inside
every request) can swallow a cancellation that arrives just as its reply does; the task then carries
on, and a shutdown that awaits it without a bound hangs forever (seen in the engine's lag watcher).
So cancellation is repeated until the task ends, within a bound, and a task that still will not end
is logged (and left) rather than waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("dsctl.tasks")


async def stop(tasks: Iterable[asyncio.Future[Any]], *, timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them to end (re-cancelling every 0.1 s), at most ``timeout``
    seconds. Exceptions they end with are read (logged), never left unretrieved."""
    every = list(tasks)
    pending = {t for t in every if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, max(0.0, deadline - loop.time())))
    for task in every:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("tasks.ended_with_error", task=repr(task), error=repr(task.exception()))
    if pending:
        log.error("tasks.would_not_stop", count=len(pending), tasks=[repr(t) for t in pending][:5])
