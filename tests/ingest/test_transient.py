"""The writers other than executors ride out a store that is briefly away, within their caller's deadline,
and say clearly when it stayed away: the CLI's apply/label paths, the ingest service and its client.

Every test runs against a real nats-server that is killed and started again (or whose event stream is
taken away and put back), and checks what ended up in the log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from engine.cli.apply import Applier
from engine.cli.operations import NodeOps
from engine.ingest.client import IngestClient
from engine.ingest.service import serve_ingest
from engine.store.event_store import (
    AppendResult,
    Deadline,
    JetStreamEventStore,
    StoredEvent,
    append_within,
)
from engine.store.jetstream_api import JetStreamUnavailable
from engine.store.streams import EVENTS_STREAM, apply_definitions, delete_streams
from events.envelope import Envelope, wrap
from events.errors import DeadlineExceeded, TransientError
from events.types import NodeLabelsChanged, NodeRegistered
from tests.conftest import TestServer
from tests.outage import down

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NODES = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1, labels: {zone: a}}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}}
"""


async def stored(store: JetStreamEventStore) -> list[StoredEvent]:
    async with asyncio.timeout(15):
        while True:
            try:
                async with contextlib.aclosing(store.read()) as events:
                    return [e async for e in events]
            except TransientError:
                await asyncio.sleep(0.1)


def node(name: str) -> Envelope:
    return wrap(NodeRegistered(name=name), id=f"reg-{name}", occurred_at=_now(), source="test")


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- the CLI's paths ---------------------------------------------------------------------------------


async def test_a_label_made_while_the_server_restarts_is_applied_once(
    nats_server: TestServer, nc: Any, streams: Any
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    await store.append(node("n1"))
    await down(nats_server, nc)
    label = asyncio.ensure_future(NodeOps(store, deadline=15).label("n1", {"gpu": "true"}))
    try:
        await asyncio.sleep(3.0)
        assert not label.done()
        await nats_server.start()
        async with asyncio.timeout(15):
            assert await label is True
    finally:
        label.cancel()
        await asyncio.gather(label, return_exceptions=True)
    changes = [e.envelope.data for e in await stored(store) if e.envelope.type == NodeLabelsChanged.TAG]
    assert changes == [NodeLabelsChanged(name="n1", labels={"gpu": "true"})]
    await store.close()


async def test_an_apply_started_while_the_server_is_down_completes_when_it_is_back(
    nats_server: TestServer, nc: Any, streams: Any
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    await down(nats_server, nc)
    applying = asyncio.ensure_future(Applier(store, deadline=15).apply(NODES))
    try:
        await asyncio.sleep(2.0)
        await nats_server.start()
        async with asyncio.timeout(15):
            assert await applying == ["node/n1 created", "node/n2 created"]
    finally:
        applying.cancel()
        await asyncio.gather(applying, return_exceptions=True)
    assert [e.envelope.data for e in await stored(store)] == [
        NodeRegistered(name="n1", labels={"zone": "a"}),
        NodeRegistered(name="n2"),
    ]
    # and running it again changes nothing
    assert await Applier(store).apply(NODES) == ["node/n1 unchanged", "node/n2 unchanged"]
    await store.close()


async def test_a_store_that_stays_away_is_a_clear_error_and_nothing_is_appended(
    nats_server: TestServer, nc: Any, streams: Any
) -> None:
    store = JetStreamEventStore(nc, timeout=1.0)
    await store.append(node("n1"))
    await down(nats_server, nc)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded) as caught:
            await NodeOps(store, deadline=2).label("n1", {"gpu": "true"})
        took = time.monotonic() - started
    finally:
        await nats_server.start()
    assert 2 <= took < 6  # the caller's deadline, not the store's timeouts added up
    text = str(caught.value)
    assert text.startswith("the event store did not answer within 2s: ")
    assert "dse.node.n1" in text and "electing a stream leader" in text
    assert "Traceback" not in text
    events = await stored(store)
    assert [e.envelope.type for e in events] == ["node.registered"]  # nothing half-applied
    # the same command run again once the store is back does it
    assert await NodeOps(store).label("n1", {"gpu": "true"}) is True
    await store.close()


async def test_an_append_whose_ack_was_lost_is_recognised_not_reported_as_a_conflict(
    nc: Any, streams: Any
) -> None:
    """The first attempt is stored but its answer never arrives; the retry, carrying the now-stale
    expected sequence, is refused by the stream. ``append_within`` finds its own event instead."""
    inner = JetStreamEventStore(nc, timeout=1.0)
    await inner.append(node("n1"))

    class AckLost:
        """The real store, except that the first append's answer is lost on the way back."""

        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        async def append(self, envelope: Envelope, **expect: Any) -> AppendResult:
            self.calls += 1
            result = await inner.append(envelope, **expect)
            if self.calls == 1:
                raise JetStreamUnavailable(f"append {envelope.id}: no answer (simulated lost ack)")
            return result

    store = AckLost()
    change = wrap(NodeLabelsChanged(name="n1", labels={"a": "b"}), id="lbl-1", occurred_at=_now(), source="t")
    result = await append_within(
        store,  # type: ignore[arg-type]
        change,
        Deadline(10),
        expected_last_subject_seq=1,
        expected_subject_filter="dse.node.n1.>",
    )
    assert store.calls == 2 and result == AppendResult(2, duplicate=True)
    assert [e.envelope.id for e in await stored(inner)] == ["reg-n1", "lbl-1"]
    await inner.close()


# --- the ingest service and its client ----------------------------------------------------------------


async def test_the_ingest_service_rides_out_a_missing_stream_within_its_budget(
    nc: Any, streams: Any, jetstream_store: JetStreamEventStore
) -> None:
    """The stream is gone for a second (as during an election: no one answers its subjects); the
    service retries within its budget and answers with the sequence, not with a 503."""
    service = await serve_ingest(nc, jetstream_store, append_budget=8.0)
    events = [d for d in streams if d.name == EVENTS_STREAM]
    try:
        await delete_streams(nc, events)
        client = IngestClient(nc, timeout=10.0, attempts=1)
        publishing = asyncio.ensure_future(client.publish(NodeRegistered(name="n7"), id="n7-registered"))
        try:
            await asyncio.sleep(1.0)
            assert not publishing.done()
            await apply_definitions(nc, events)
            async with asyncio.timeout(10):
                reply = await publishing
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        assert (reply.seq, reply.duplicate, reply.id) == (1, False, "n7-registered")
        assert service.counters.unavailable == 0 and service.counters.accepted == 1
    finally:
        await service.stop()
    assert [e.envelope.id for e in await stored(jetstream_store)] == ["n7-registered"]


async def test_the_ingest_service_answers_503_naming_the_cause_when_its_budget_runs_out(
    nc: Any, streams: Any, jetstream_store: JetStreamEventStore
) -> None:
    service = await serve_ingest(nc, jetstream_store, append_budget=1.0)
    try:
        await delete_streams(nc, [d for d in streams if d.name == EVENTS_STREAM])
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await IngestClient(nc, attempts=1).publish_many(
                [NodeRegistered(name="a"), NodeRegistered(name="b")]
            )
        assert time.monotonic() - started < 5
        text = str(caught.value)
        assert "the event store did not answer within 1s" in text and "retry with the same id" in text
        assert service.counters.unavailable == 1
    finally:
        await service.stop()


async def test_a_client_publish_made_while_the_server_restarts_is_stored_once(
    nats_server: TestServer, nc: Any, streams: Any, jetstream_store: JetStreamEventStore
) -> None:
    service = await serve_ingest(nc, jetstream_store, append_budget=2.0)
    try:
        await down(nats_server, nc)
        client = IngestClient(nc, timeout=1.0, deadline=20)
        publishing = asyncio.ensure_future(client.publish(NodeRegistered(name="n8"), id="n8-registered"))
        try:
            await asyncio.sleep(3.0)
            assert not publishing.done()
            await nats_server.start()
            async with asyncio.timeout(20):
                reply = await publishing
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        assert reply.id == "n8-registered"
    finally:
        await service.stop()
    assert [e.envelope.id for e in await stored(jetstream_store)] == ["n8-registered"]


async def test_a_client_gives_up_at_its_deadline_with_a_clear_error(nc: Any) -> None:
    """No service at all: retried until the deadline, then one error saying so."""
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await IngestClient(nc, timeout=0.5, backoff=0.1, deadline=2).publish(NodeRegistered(name="a"))
    assert 1.5 < time.monotonic() - started < 5
    assert "not accepted within 2s" in str(caught.value)
    assert "no ingest service answers" in str(caught.value)


async def test_a_batch_published_while_the_server_restarts_is_stored_once_and_whole(
    nats_server: TestServer, nc: Any, streams: Any, jetstream_store: JetStreamEventStore
) -> None:
    """The client retries the batch with the same ids until the server is back; the service appends it
    as one atomic batch, so the log holds every event once, in the batch's order, at consecutive
    sequences, and never part of it."""
    service = await serve_ingest(nc, jetstream_store, append_budget=2.0)
    names = [f"b{i}" for i in range(50)]
    try:
        await down(nats_server, nc)
        client = IngestClient(nc, timeout=1.0, deadline=20)
        publishing = asyncio.ensure_future(client.publish_many([NodeRegistered(name=n) for n in names]))
        try:
            await asyncio.sleep(3.0)
            assert not publishing.done()
            await nats_server.start()
            async with asyncio.timeout(20):
                replies = await publishing
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
    finally:
        await service.stop()
    events = await stored(jetstream_store)
    assert [e.envelope.data.name for e in events] == names  # type: ignore[attr-defined]
    assert [e.seq for e in events] == [r.seq for r in replies] == list(range(1, len(names) + 1))
