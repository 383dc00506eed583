"""Reading the log for the CLI: the state now or at any point of the past, and filtered event ranges.

``--at`` accepts a stream sequence (``--at 1234``) or an RFC 3339 time (``--at 2026-11-22T09:00:00Z``):
the state is rebuilt from the newest snapshot that is not past that point (or from the start) plus the
events up to it. The log's clock is the time the store accepted each event.

Inside the engine's query service the same verbs run on the live projection instead: ``answering_from``
marks the task (a context variable, so concurrent tasks are not affected) and ``load_state`` hands back
that state for the present, which is what makes the service's answer and a rebuild from the log print
the same (docs/console.md, "The query service").
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextvars import ContextVar
from datetime import datetime

from engine.store.event_store import EventStore, MalformedStoredEvent, StoredEvent
from engine.store.projector import ObjectSnapshots, Projector
from engine.store.streams import SNAPSHOTS_BUCKET
from events.errors import InvalidInput
from projections import snapshot
from projections.model import ClusterState

#: the live projection's state, while the query service answers in this task
_LIVE: ContextVar[ClusterState | None] = ContextVar("dsctl_live_state", default=None)


@contextlib.contextmanager
def answering_from(state: ClusterState) -> Iterator[None]:
    """Within this block (this task), ``load_state`` for the present is ``state``, not a rebuild."""
    token = _LIVE.set(state)
    try:
        yield
    finally:
        _LIVE.reset(token)


def answering() -> bool:
    """True inside the query service: the verb must not ask the service again."""
    return _LIVE.get() is not None


async def _snapshot_store(nc: object) -> ObjectSnapshots | None:
    try:
        store = await nc.jetstream().object_store(SNAPSHOTS_BUCKET)  # type: ignore[attr-defined]
    except Exception:
        return None
    return ObjectSnapshots(store)


async def seq_at_time(store: EventStore, when: datetime) -> int:
    """The last sequence stored at or before ``when``."""
    async with contextlib.aclosing(store.read(start_time=when)) as events:
        async for stored in events:
            return stored.seq - 1 if stored.time > when else stored.seq
    return await store.last_seq()


async def load_state(
    store: EventStore, nc: object | None = None, at: int | datetime | None = None
) -> ClusterState:
    live = _LIVE.get()
    if live is not None and at is None:
        return live
    end = await store.last_seq()
    if isinstance(at, datetime):
        end = min(end, await seq_at_time(store, at))
    elif isinstance(at, int):
        if at < 0:
            raise InvalidInput("a stream sequence cannot be negative", "--at")
        end = min(end, at)
    state = ClusterState()
    snaps = await _snapshot_store(nc) if nc is not None else None
    if snaps is not None:
        data = None
        with contextlib.suppress(Exception):
            data = await snaps.load()
        if data is not None:
            with contextlib.suppress(Exception):
                loaded = snapshot.load(data)
                if loaded.seq <= end:
                    state = loaded
    if state.seq < end:
        projector = Projector(store, state=state)
        await projector.load(use_snapshot=False, end_seq=end)
        state = projector.state
    return state


async def readable(
    store: EventStore,
    subjects: Sequence[str] | None,
    skipped: list[int],
    *,
    start_seq: int = 1,
    end_seq: int | None = None,
    malformed: list[MalformedStoredEvent] | None = None,
) -> AsyncGenerator[StoredEvent, None]:
    """Every readable event, streamed (a long log is never held in memory); a malformed one is noted
    in ``skipped`` (and, for a caller that must say where and why, in ``malformed``) and passed over,
    as the projector does."""
    start = max(start_seq, 1)
    while True:
        try:
            events = store.read(start_seq=start, end_seq=end_seq, subjects=subjects)
            async with contextlib.aclosing(events):
                async for stored in events:
                    yield stored
            return
        except MalformedStoredEvent as err:
            skipped.append(err.seq)
            if malformed is not None:
                malformed.append(err)
            start = err.seq + 1
