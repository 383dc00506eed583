"""ONE contract for every EventStore: the in-memory store and JetStream must behave the same."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.store.memory_store import MemoryEventStore, subject_matches
from engine.store.port import (
    AppendResult,
    EventStore,
    MalformedStoredEvent,
    StoredEvent,
)
from events.errors import ConflictError, NotFound
from events.ids import stable_id
from events.subjects import node_filters, subject_for, type_filter
from events.types import NodeCordoned, NodeRegistered
from tests.contract.envelopes import envelope, envelopes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def memory_store() -> AsyncIterator[MemoryEventStore]:
    s = MemoryEventStore()
    yield s
    await s.close()


@pytest.fixture(params=["memory", pytest.param("jetstream", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Any:
    # a sync dispatcher: only the JetStream case starts a server
    return request.getfixturevalue(f"{request.param}_store")


async def collect(store: EventStore, **kwargs: Any) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    async with asyncio.timeout(30):
        async with contextlib.aclosing(store.read(**kwargs)) as events:
            async for e in events:
                out.append(e)
    return out


async def test_implements_the_port(store: EventStore) -> None:
    assert isinstance(store, EventStore)


async def test_ten_thousand_events_round_trip_in_order(store: EventStore) -> None:
    batch = envelopes(10_000)
    results = await store.append_many(batch)
    assert results == [AppendResult(i, False) for i in range(1, 10_001)]
    assert await store.last_seq() == 10_000
    read = await collect(store)
    assert [e.seq for e in read] == list(range(1, 10_001))
    assert [e.envelope for e in read] == batch
    assert [e.subject for e in read] == [subject_for(e.data) for e in batch]
    times = [e.time for e in read]
    assert times == sorted(times)


async def test_duplicate_id_is_stored_once(store: EventStore) -> None:
    first = envelope(NodeRegistered(name="a"), 1)
    assert await store.append(first) == AppendResult(1, False)
    assert await store.append(envelope(NodeCordoned(name="a"), 2)) == AppendResult(2, False)
    assert await store.append(first) == AppendResult(1, True)
    many = await store.append_many([envelope(NodeCordoned(name="a"), 2), envelope(NodeCordoned(name="b"), 3)])
    assert many == [AppendResult(2, True), AppendResult(3, False)]
    assert await store.last_seq() == 3
    assert [e.envelope.id for e in await collect(store)] == [stable_id("t", i) for i in (1, 2, 3)]


async def test_stale_expected_subject_sequence_conflicts(store: EventStore) -> None:
    e1 = envelope(NodeRegistered(name="a"), 1)
    assert (await store.append(e1, expected_last_subject_seq=0)).seq == 1
    await store.append(envelope(NodeRegistered(name="b"), 2))  # another subject does not matter
    with pytest.raises(ConflictError):
        await store.append(envelope(NodeRegistered(name="a"), 3), expected_last_subject_seq=0)
    assert (await store.append(envelope(NodeRegistered(name="a"), 3), expected_last_subject_seq=1)).seq == 3
    assert await store.last_seq() == 3


async def test_stale_expected_stream_sequence_conflicts(store: EventStore) -> None:
    await store.append(envelope(NodeRegistered(name="a"), 1), expected_last_seq=0)
    with pytest.raises(ConflictError):
        await store.append(envelope(NodeRegistered(name="b"), 2), expected_last_seq=0)
    assert (await store.append(envelope(NodeRegistered(name="b"), 2), expected_last_seq=1)).seq == 2


async def test_expectation_is_checked_before_dedupe(store: EventStore) -> None:
    """A retry carrying its original, now stale, expectation conflicts (the server's order)."""
    e1 = envelope(NodeRegistered(name="a"), 1)
    await store.append(e1, expected_last_subject_seq=0)
    with pytest.raises(ConflictError):
        await store.append(e1, expected_last_subject_seq=0)
    assert await store.append(e1, expected_last_subject_seq=1) == AppendResult(1, True)


async def test_subject_filtered_reads(store: EventStore) -> None:
    batch = envelopes(200)
    await store.append_many(batch)
    only_a = await collect(store, subjects=node_filters("node-3"))
    want = [
        i + 1 for i, e in enumerate(batch) if getattr(e.data, "node", getattr(e.data, "name", "")) == "node-3"
    ]
    assert [e.seq for e in only_a] == want
    two = await collect(store, subjects=[type_filter("node.cordoned"), type_filter("pod.ready")])
    assert [e.seq for e in two] == [
        i + 1 for i, e in enumerate(batch) if e.type in ("node.cordoned", "pod.ready")
    ]
    assert await collect(store, subjects=["dse.node.nobody.>"]) == []
    ranged = await collect(store, subjects=[type_filter("node.cordoned")], start_seq=50, end_seq=120)
    assert [e.seq for e in ranged] == [s for s in (e.seq for e in two) if 50 <= s <= 120 and s % 5 == 3]


async def test_read_ranges(store: EventStore) -> None:
    assert await collect(store) == []
    await store.append_many(envelopes(30))
    assert [e.seq for e in await collect(store, start_seq=11, end_seq=20)] == list(range(11, 21))
    assert [e.seq for e in await collect(store, start_seq=25)] == list(range(25, 31))
    assert await collect(store, start_seq=31) == []
    assert [e.seq for e in await collect(store, end_seq=1000)] == list(range(1, 31))


async def test_read_stops_at_the_end_present_when_it_began(store: EventStore) -> None:
    await store.append_many(envelopes(10))
    seen: list[int] = []
    async with asyncio.timeout(10), contextlib.aclosing(store.read()) as events:
        async for e in events:
            seen.append(e.seq)
            if e.seq == 1:
                await store.append_many(envelopes(5, start=100))
    assert seen == list(range(1, 11))


async def test_read_by_start_time(store: EventStore) -> None:
    await store.append_many(envelopes(5))
    await asyncio.sleep(0.02)
    await store.append_many(envelopes(5, start=5))
    all_events = await collect(store)
    t = all_events[5].time
    from_t = await collect(store, start_time=t)
    assert [e.seq for e in from_t] == list(range(6, 11))
    later = await collect(store, start_time=all_events[-1].time.replace(year=2100))
    assert later == []


async def test_get_by_sequence(store: EventStore) -> None:
    batch = envelopes(3)
    await store.append_many(batch)
    got = await store.get(2)
    assert got.seq == 2 and got.envelope == batch[1] and got.subject == subject_for(batch[1].data)
    with pytest.raises(NotFound):
        await store.get(99)


async def test_follow_sees_new_appends(store: EventStore) -> None:
    await store.append_many(envelopes(3))
    async with contextlib.aclosing(store.follow(2)) as events:
        got = [await next_event(events) for _ in range(2)]
        assert [e.seq for e in got] == [2, 3]
        await store.append(envelope(NodeRegistered(name="late"), 1000))
        late = await next_event(events)
        assert late.seq == 4 and late.envelope.data == NodeRegistered(name="late")
        await store.append_many(envelopes(3, start=2000))
        assert [(await next_event(events)).seq for _ in range(3)] == [5, 6, 7]


async def test_follow_with_subject_filter(store: EventStore) -> None:
    async with contextlib.aclosing(store.follow(1, subjects=node_filters("only"))) as events:
        await store.append(envelope(NodeRegistered(name="other"), 1))
        await store.append(envelope(NodeRegistered(name="only"), 2))
        e = await next_event(events)
        assert e.seq == 2 and e.subject == "dse.node.only.registered"


async def test_malformed_stored_message_names_its_sequence(store: Any) -> None:
    await store.append(envelope(NodeRegistered(name="a"), 1))
    await store.append_raw("dse.node.a.registered", b'{"id": "x", "type": 7}', msg_id="raw-1")
    await store.append(envelope(NodeRegistered(name="a"), 3))
    with pytest.raises(MalformedStoredEvent) as info:
        await collect(store)
    assert info.value.seq == 2
    assert "$.type" in str(info.value) and "sequence 2" in str(info.value)
    assert [e.seq for e in await collect(store, start_seq=3)] == [3]
    with pytest.raises(MalformedStoredEvent):
        await store.get(2)


async def next_event(events: Any, timeout: float = 10.0) -> StoredEvent:
    async with asyncio.timeout(timeout):
        e: StoredEvent = await anext(events)
        return e


@pytest.mark.parametrize(
    ("pattern", "subject", "match"),
    [
        ("dse.node.>", "dse.node.a.registered", True),
        ("dse.node.>", "dse.node", False),
        ("dse.*.a.*", "dse.node.a.registered", True),
        ("dse.*.a", "dse.node.a.registered", False),
        ("dse.node.a.registered", "dse.node.a.registered", True),
        ("dse.node.b.registered", "dse.node.a.registered", False),
        (">", "x", True),
    ],
)
def test_memory_subject_matching(pattern: str, subject: str, match: bool) -> None:
    assert subject_matches(pattern, subject) is match
