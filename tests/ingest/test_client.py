"""The typed client and ``publish_file``: replies as values, refusals as ``InvalidInput`` with the field,
everything that may pass with time as ``TransientError``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from engine.ingest.client import IngestClient, IngestRefused
from engine.ingest.publish import publish_file
from engine.ingest.service import IngestService
from engine.store.event_store import JetStreamEventStore
from engine.store.streams import EVENTS_STREAM, delete_streams
from events.envelope import wrap
from events.errors import InvalidInput, NotFound, TransientError
from events.k8s import Taint
from events.subjects import INGEST_EVENT_SUBJECT
from events.types import DecisionRecorded, NodeCordoned, NodeRegistered, NodeTaintsChanged, PodDeleted
from tests.contract.envelopes import T0
from tests.ingest.samples import body, node_registered

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_publish_returns_the_sequence_and_keeps_envelope_fields(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    client = IngestClient(nc, source="cmdb-sync")
    reply = await client.publish(
        NodeRegistered(name="node-1", labels={"zone": "a"}), causation_id="ticket-7", occurred_at=T0
    )
    assert reply.seq == 1 and not reply.duplicate
    stored = (await jetstream_store.get(1)).envelope
    assert (stored.id, stored.source, stored.causation_id, stored.occurred_at) == (
        reply.id,
        "cmdb-sync",
        "ticket-7",
        T0,
    )
    again = await client.publish(NodeRegistered(name="node-1"), id=reply.id)
    assert (again.seq, again.duplicate, again.id) == (1, True, reply.id)


async def test_a_refusal_is_invalid_input_with_the_field(nc: Any, ingest: IngestService) -> None:
    client = IngestClient(nc)
    with pytest.raises(InvalidInput) as info:
        await client.publish(NodeTaintsChanged(name="node-1", taints=(Taint(key="gpu", effect="Sometimes"),)))
    assert isinstance(info.value, IngestRefused)
    assert info.value.field == "$.data.taints[0].effect" and info.value.reason_code == "invalid"
    assert str(info.value).startswith("$.data.taints[0].effect: Unsupported value")
    with pytest.raises(IngestRefused, match="written by the engine only") as engine_only:
        await client.publish_raw(body({"type": DecisionRecorded.TAG, "data": {}}))
    assert engine_only.value.field == "$.type"
    with pytest.raises(IngestRefused) as executor_only:
        await client.publish(PodDeleted(namespace="default", name="p", node="node-1"))
    assert (executor_only.value.field, executor_only.value.reason_code) == ("$.type", "executor_only")
    deep = b'{"type": "node.cordoned", "data": {"name": "n", "x": ' + b"[" * 100 + b"]" * 100 + b"}}"
    with pytest.raises(IngestRefused) as too_deep:
        await client.publish_raw(deep)
    assert (too_deep.value.reason_code, too_deep.value.limit) == ("too_large", "max_depth 64")


async def test_publish_many_is_one_all_or_nothing_batch(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    client = IngestClient(nc)
    with pytest.raises(IngestRefused) as info:
        await client.publish_many([NodeRegistered(name="a"), NodeCordoned(name="B")])
    assert info.value.field == "$[1].data.name" and [e.index for e in info.value.errors] == [1]
    assert await jetstream_store.last_seq() == 0
    mine = wrap(NodeCordoned(name="a"), id="node-a-cordoned", occurred_at=T0, source="x")
    replies = await client.publish_many([NodeRegistered(name="a"), mine])
    assert [r.seq for r in replies] == [1, 2] and replies[1].id == "node-a-cordoned"
    assert (await jetstream_store.get(2)).envelope == mine
    assert await client.publish_many([]) == []
    raw = await client.publish_many_raw(body(node_registered("c")) + b"\n" + body(node_registered("d")))
    assert [r.seq for r in raw] == [3, 4]


async def test_no_service_is_a_transient_error(nc: Any) -> None:
    client = IngestClient(nc, attempts=2, backoff=0.01)
    with pytest.raises(TransientError, match="no ingest service answers"):
        await client.publish(NodeRegistered(name="a"))


async def test_a_silent_responder_is_a_transient_timeout(nc: Any) -> None:
    sub = await nc.subscribe(INGEST_EVENT_SUBJECT)  # takes the request and never answers
    try:
        with pytest.raises(TransientError, match="no answer"):
            await IngestClient(nc, timeout=0.2, attempts=1).publish_raw(body(node_registered()))
    finally:
        await sub.unsubscribe()


async def test_an_unavailable_store_is_a_transient_error(
    nc: Any, ingest: IngestService, streams: Any
) -> None:
    await delete_streams(nc, [d for d in streams if d.name == EVENTS_STREAM])
    with pytest.raises(TransientError, match="retry with the same id"):
        await IngestClient(nc, attempts=2, backoff=0.01).publish(NodeRegistered(name="a"))


async def test_publish_file_reports_every_line(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        body({**node_registered("node-1"), "id": "n1"}),
        b"",
        body({"type": "node.registered", "data": {"name": "node-2", "labels": "x"}}),
        body({**node_registered("node-1"), "id": "n1"}),
        body(node_registered("node-3")) + b"\r",
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = io.StringIO()
    assert await publish_file(nc, path, out=out) == 1
    report = out.getvalue().splitlines()
    assert report[0] == "line 1: accepted seq=1 id=n1"
    assert report[1].startswith("line 3: rejected: $.data.labels: Expected `object`")
    assert report[2] == "line 4: duplicate seq=1 id=n1"
    assert report[3].startswith("line 5: accepted seq=2 id=")
    assert len(report) == 4

    good = tmp_path / "good.jsonl"
    good.write_bytes(body(node_registered("node-4")) + b"\n")
    assert await publish_file(nc, good, out=io.StringIO()) == 0
    with pytest.raises(NotFound):
        await publish_file(nc, tmp_path / "missing.jsonl", out=io.StringIO())


async def test_publish_file_stops_when_the_service_is_gone(nc: Any, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(body(node_registered(f"n{i}")) for i in range(3)))
    out = io.StringIO()
    assert await publish_file(nc, path, out=out) == 1
    assert out.getvalue().splitlines() == [
        f"line 1: error: no ingest service answers on {INGEST_EVENT_SUBJECT} (is `dsctl ingest run` up?)",
        "stopped: 2 more line(s) not sent",
    ]
