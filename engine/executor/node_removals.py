"""How executors learn that a node they serve was removed: one tail per process connection (shared by
the executors of an ``ExecutorContext``) of the log's ``node.removed`` events, handed to each executor
(``Executor.forget_node`` says what it does then, and ignores a removal at or before its start state).

No command says so: the projection drops a removed node's pods and the commands in flight for them on
its own, so without this tail a fleet would keep every pod of every removed node for ever (its
``LocalPod``, its lock, its simulated life), and a reconnect would report them all again.

The tail is the event store's ``follow`` (an ordered consumer that resets itself after a server
restart or a reconnect, engine/store/ordered.py), filtered on the removal subjects and started from
the first executor's start position. An executor registered later from an earlier position is first
given the removals between (a bounded read). Any failure is logged and the tail starts again a moment
later from the event after the last one handled: a removal is never skipped, and one handed over twice
lets go of nothing the second time. The executor roles may read the log (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from engine.executor.executor import Executor
from engine.store.port import EventStore, MalformedStoredEvent
from events.subjects import type_filter
from events.types import NodeRemoved

log = structlog.get_logger("dsctl.executor")

#: how long the tail waits before starting again after a failure
RETRY_SECONDS = 2.0

SUBJECTS = [type_filter(NodeRemoved.TAG)]


class RemovalTail:
    """One tail of node removals for the executors of one process (see the module notes)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._executors: set[Executor] = set()
        #: the last log position handed over (0: none yet)
        self.position = 0
        self.handed = 0
        self._task: asyncio.Task[None] | None = None
        self._catch_ups: set[asyncio.Task[None]] = set()

    def register(self, executor: Executor) -> None:
        """Hand ``executor`` every removal after its start state (``recovered_seq``) until
        ``unregister``."""
        from_seq = executor.recovered_seq + 1
        self._executors.add(executor)
        if self._task is None:
            self.position = from_seq - 1
            self._task = asyncio.ensure_future(self._follow(from_seq))
        elif from_seq <= self.position:
            task = asyncio.ensure_future(self._catch_up(executor, from_seq, self.position))
            self._catch_ups.add(task)
            task.add_done_callback(self._catch_ups.discard)

    def unregister(self, executor: Executor) -> None:
        """The last executor gone stops the tail (a process whose executors all stopped, or whose
        connection closed under them, must not go on retrying a read nobody waits for); the next
        ``register`` starts it again from that executor's start state."""
        self._executors.discard(executor)
        if not self._executors:
            for task in [*self._catch_ups, *([self._task] if self._task is not None else [])]:
                task.cancel()
            self._task = None

    async def _hand(self, name: str, seq: int, to: list[Executor]) -> None:
        for executor in to:
            try:
                await executor.forget_node(name, seq)
            except Exception:  # one executor's failure must not keep the removal from the others
                log.exception("executor.forget_node_failed", node=name, seq=seq)
        self.handed += 1

    async def _follow(self, from_seq: int) -> None:
        next_seq = max(from_seq, 1)
        while True:
            try:
                async for stored in self._store.follow(next_seq, SUBJECTS):
                    event = stored.envelope.data
                    if isinstance(event, NodeRemoved):
                        await self._hand(event.name, stored.seq, list(self._executors))
                    next_seq = stored.seq + 1
                    self.position = stored.seq
            except asyncio.CancelledError:
                raise
            except MalformedStoredEvent as err:
                log.error("executor.removal_unreadable", seq=err.seq, subject=err.subject, error=str(err))
                next_seq = max(next_seq, err.seq + 1)
                continue
            except Exception as err:
                log.error(
                    "executor.removals_unavailable",
                    from_seq=next_seq,
                    error=f"{type(err).__name__}: {err}",
                    retry_seconds=RETRY_SECONDS,
                )
            else:
                log.error("executor.removals_ended", from_seq=next_seq, retry_seconds=RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)

    async def _catch_up(self, executor: Executor, from_seq: int, to_seq: int) -> None:
        """The removals an executor registered late missed: a bounded read, retried until done."""
        next_seq = from_seq
        while next_seq <= to_seq:
            try:
                async for stored in self._store.read(start_seq=next_seq, end_seq=to_seq, subjects=SUBJECTS):
                    event = stored.envelope.data
                    if isinstance(event, NodeRemoved) and executor in self._executors:
                        await self._hand(event.name, stored.seq, [executor])
                    next_seq = stored.seq + 1
                return
            except asyncio.CancelledError:
                raise
            except MalformedStoredEvent as err:
                log.error("executor.removal_unreadable", seq=err.seq, subject=err.subject, error=str(err))
                next_seq = max(next_seq, err.seq + 1)
            except Exception as err:
                log.error(
                    "executor.removals_unavailable",
                    from_seq=next_seq,
                    error=f"{type(err).__name__}: {err}",
                    retry_seconds=RETRY_SECONDS,
                )
                await asyncio.sleep(RETRY_SECONDS)

    async def close(self) -> None:
        tasks = [*self._catch_ups, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
