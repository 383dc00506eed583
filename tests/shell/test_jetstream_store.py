"""JetStream-only store behaviour: server restarts and crashes, and failures mapped to the error tree."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from engine.store.port import AppendResult, StoredEvent
from events.errors import TransientError
from events.types import NodeRegistered
from tests.conftest import TestServer
from tests.contract.envelopes import envelope, envelopes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def next_event(events: Any, timeout: float = 15.0) -> StoredEvent:
    async with asyncio.timeout(timeout):
        e: StoredEvent = await anext(events)
        return e


async def append_eventually(store: Any, env: Any, timeout: float = 15.0) -> AppendResult:
    """Retry a transient failure (the client is reconnecting) with the same id: dedupe makes it safe."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                result: AppendResult = await store.append(env)
                return result
            except TransientError:
                await asyncio.sleep(0.1)


async def test_follow_survives_a_server_restart(nats_server: TestServer, jetstream_store: Any) -> None:
    store = jetstream_store
    await store.append_many(envelopes(5))
    async with contextlib.aclosing(store.follow(1)) as events:
        assert [(await next_event(events)).seq for _ in range(5)] == [1, 2, 3, 4, 5]
        await nats_server.restart()
        result = await append_eventually(store, envelope(NodeRegistered(name="after-restart"), 100))
        assert result.seq == 6
        after = await next_event(events)
        assert after.seq == 6 and after.envelope.data == NodeRegistered(name="after-restart")
        await store.append_many(envelopes(3, start=200))
        assert [(await next_event(events)).seq for _ in range(3)] == [7, 8, 9]


async def test_acknowledged_events_survive_a_crash(nats_server: TestServer, jetstream_store: Any) -> None:
    store = jetstream_store
    batch = envelopes(500)
    await store.append_many(batch)
    await nats_server.restart(crash=True)  # SIGKILL: no clean shutdown
    async with asyncio.timeout(15):
        while True:
            try:
                last = await store.last_seq()
                break
            except TransientError:
                await asyncio.sleep(0.1)
    assert last == 500
    stored = []
    async with contextlib.aclosing(store.read()) as events:
        async for e in events:
            stored.append(e.envelope)
    assert stored == batch
    # a retried append of an acknowledged event is still recognised as a duplicate after the crash
    assert await store.append(batch[10]) == AppendResult(11, True)


async def test_appends_while_the_server_is_down_are_transient(
    nats_server: TestServer, nc: Any, streams: Any
) -> None:
    from engine.store.jetstream_store import JetStreamEventStore

    store = JetStreamEventStore(nc, timeout=1.0)
    await store.append(envelope(NodeRegistered(name="a"), 1))
    await nats_server.kill()
    try:
        with pytest.raises(TransientError):
            await store.append(envelope(NodeRegistered(name="b"), 2))
        with pytest.raises(TransientError):
            await store.append_many(envelopes(3, start=10))
    finally:
        await nats_server.start()
    result = await append_eventually(store, envelope(NodeRegistered(name="b"), 2))
    # the un-acked publishes were buffered and sent on reconnect: a retry dedupes against them
    assert not result.duplicate or result.seq == 2
    await store.close()


async def test_a_bounded_read_gives_up_when_the_server_stays_away(
    nats_server: TestServer, nc: Any, streams: Any
) -> None:
    from engine.store.ordered import ordered_messages

    await nats_server.kill()
    messages = ordered_messages(
        nc, "DSE_EVENTS", stop_at=10, heartbeat=0.2, stall_timeout=1.0, api_timeout=0.3
    )
    async with contextlib.aclosing(messages), asyncio.timeout(10):
        with pytest.raises(TransientError, match="no progress"):
            await anext(messages)
    await nats_server.start()


async def test_missing_stream_is_not_found(nc: Any) -> None:
    from engine.store.jetstream_store import JetStreamEventStore
    from events.errors import NotFound

    store = JetStreamEventStore(nc, stream="NO_SUCH_STREAM")
    with pytest.raises(NotFound):
        await store.last_seq()
    await store.close()
