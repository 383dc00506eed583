"""The executor's pod reports on their way to the log: batched, in order, each caller told when its
own report is stored."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog

from engine.shell.store import EventStore
from events.envelope import wrap
from events.errors import TransientError
from events.types import PodEvent

log = structlog.get_logger("dsctl.executor")


class BatchingAppender:
    """Appends pod reports in batches (one ``append_many`` per burst) while keeping their order.

    A simulated fleet reports tens of thousands of pod events in a burst; one request-reply per report
    would cap it at the round-trip rate. Each caller still waits for its own report to be stored.
    """

    def __init__(self, store: EventStore, source: str, *, max_batch: int = 512) -> None:
        self.store = store
        self.source = source
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[PodEvent, str, str, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, event: PodEvent, *, event_id: str, causation_id: str) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((event, event_id, causation_id, done))
        await done

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            now = datetime.now(UTC)
            envelopes = [
                wrap(ev, id=eid, occurred_at=now, source=self.source, causation_id=cause)
                for ev, eid, cause, _ in batch
            ]
            for attempt in range(5):
                try:
                    await self.store.append_many(envelopes)
                    break
                except TransientError as err:
                    log.warning("executor.report_retry", attempt=attempt, error=str(err))
                    await asyncio.sleep(0.2 * 2**attempt)
                except Exception as err:
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    batch = []
                    break
            else:
                failure = TransientError("pod reports could not be appended after 5 attempts")
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(failure)
                batch = []
            for *_, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
