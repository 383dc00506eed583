"""The ingest service against a real nats-server: appends, refusals (with their DSE_REJECTED records),
dedupe, batches, discovery, and random input that must never break it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ingest.service import IngestService
from engine.store.event_store import JetStreamEventStore
from engine.store.streams import EVENTS_STREAM, REJECTED_STREAM, delete_streams
from events.ingest_wire import SERVICE_NAME, Rejection
from events.k8s import NodeCondition
from events.subjects import INGEST_BATCH_SUBJECT, INGEST_EVENT_SUBJECT, rejected_subject
from events.types import DaemonSetApplied, NodeConditionChanged, NodeRegistered
from tests.events.strategies import json_values
from tests.ingest.samples import body, daemonset_applied, node_registered

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def ask(nc: Any, data: bytes, subject: str = INGEST_EVENT_SUBJECT) -> tuple[str | None, dict[str, Any]]:
    """(error code or None, decoded body)."""
    msg = await nc.request(subject, data, timeout=5)
    code = (msg.headers or {}).get("Nats-Service-Error-Code")
    return code, json.loads(msg.data)


async def rejected(nc: Any) -> list[tuple[str, Rejection]]:
    js = nc.jetstream()
    info = await js.stream_info(REJECTED_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(REJECTED_STREAM, seq)
        out.append((msg.subject, msgspec.json.decode(msg.data, type=Rejection)))
    return out


async def test_a_valid_node_event_is_appended_and_its_seq_returned(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    code, reply = await ask(nc, body(node_registered("node-1")))
    assert code is None and reply["seq"] == 1 and reply["duplicate"] is False
    stored = await jetstream_store.get(1)
    assert stored.subject == "dse.node.node-1.registered"
    assert stored.envelope.id == reply["id"] and stored.envelope.source == "ingest"
    assert stored.envelope.data == NodeRegistered(name="node-1", labels={"zone": "a"})
    code, reply = await ask(nc, body({"type": "node.cordoned", "data": {"name": "node-1"}, "source": "cmdb"}))
    assert code is None and reply["seq"] == 2
    assert (await jetstream_store.get(2)).envelope.source == "cmdb"


async def test_a_malformed_event_gets_a_400_naming_the_field_and_is_kept_as_rejected(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    bad = body({"type": "node.registered", "data": {"name": "node-1", "labels": "zone=a"}})
    msg = await nc.request(INGEST_EVENT_SUBJECT, bad, timeout=5)
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert "$.data.labels" in msg.headers["Nats-Service-Error"]
    reply = json.loads(msg.data)
    assert reply["field"] == "$.data.labels" and reply["reason_code"] == "malformed" and reply["code"] == 400
    assert await jetstream_store.last_seq() == 0
    [(subject, record)] = await rejected(nc)
    assert subject == rejected_subject("malformed") == "dse.rejected.malformed"
    assert record.field == "$.data.labels" and "Expected `object`" in record.reason
    assert record.input == bad.decode() and record.endpoint == INGEST_EVENT_SUBJECT
    assert abs(record.received_at.timestamp() - time.time()) < 60


async def test_a_rule_breaking_event_is_refused_under_its_own_reason(nc: Any, ingest: IngestService) -> None:
    code, reply = await ask(nc, body(node_registered("Node_1")))
    assert code == "400" and reply["field"] == "$.data.name" and reply["reason_code"] == "invalid"
    assert "RFC 1123 subdomain" in reply["description"]
    [(subject, record)] = await rejected(nc)
    assert subject == "dse.rejected.invalid" and record.errors[0].field == "$.data.name"


async def test_bytes_that_are_not_utf8_are_kept_losslessly(nc: Any, ingest: IngestService) -> None:
    raw = b"\xff\xfe{\x00garbage"
    code, _ = await ask(nc, raw)
    assert code == "400"
    [(_, record)] = await rejected(nc)
    assert record.input_encoding == "base64" and base64.b64decode(record.input) == raw


async def test_a_huge_input_is_answered_and_kept_truncated(nc: Any, ingest: IngestService) -> None:
    huge_key = "k" * 400_000  # quoted back by the decoder's message
    data = body({**node_registered(), huge_key: 1})
    msg = await nc.request(INGEST_EVENT_SUBJECT, data, timeout=5)
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert len(msg.headers["Nats-Service-Error"]) <= 1000 and len(msg.data) < 10_000
    [(_, record)] = await rejected(nc)
    assert record.input_truncated and data.decode().startswith(record.input)


async def test_a_repeated_id_is_deduplicated(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    request = body({**node_registered(), "id": "cmdb-node-1-v7"})
    first = await ask(nc, request)
    again = await ask(nc, request)
    assert first == (None, {"seq": 1, "duplicate": False, "id": "cmdb-node-1-v7"})
    assert again == (None, {"seq": 1, "duplicate": True, "id": "cmdb-node-1-v7"})
    assert await jetstream_store.last_seq() == 1
    assert ingest.counters.accepted == 1 and ingest.counters.duplicates == 1


@pytest.mark.parametrize(
    "request_obj",
    [
        {"type": "decision.recorded", "data": {}},
        {"type": "leader.elected", "data": {"holder": "intruder", "epoch": 1_000_000}},
    ],
)
async def test_types_only_the_engine_writes_are_refused(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore, request_obj: dict[str, Any]
) -> None:
    code, reply = await ask(nc, body(request_obj))
    assert code == "400" and reply["field"] == "$.type" and reply["reason_code"] == "engine_only"
    assert "written by the engine only" in reply["description"]
    assert await jetstream_store.last_seq() == 0
    [(subject, _)] = await rejected(nc)
    assert subject == "dse.rejected.engine_only"


async def test_an_old_schema_version_is_stored_upcast(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    flat = {"name": "node-1", "type": "Ready", "status": "False"}
    code, _ = await ask(nc, body({"type": "node.condition_changed", "schema_version": 1, "data": flat}))
    assert code is None
    stored = (await jetstream_store.get(1)).envelope
    assert stored.schema_version == 2
    assert stored.data == NodeConditionChanged(
        name="node-1", condition=NodeCondition(type="Ready", status="False")
    )


async def test_a_daemonset_can_be_ingested_as_apply_would_write_it(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    code, reply = await ask(nc, body(daemonset_applied()))
    assert code is None, reply
    stored = await jetstream_store.get(reply["seq"])
    assert stored.subject == "dse.ds.kube-system.agent.applied"
    assert isinstance(stored.envelope.data, DaemonSetApplied)


async def test_a_batch_is_all_or_nothing(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    lines = [
        body(node_registered("a")),
        body(node_registered("b")),
        body(node_registered("C!")),
        body({"type": "node.cordoned", "data": {"name": "a"}}),
    ]
    code, reply = await ask(nc, b"\n".join(lines), INGEST_BATCH_SUBJECT)
    assert code == "400" and reply["field"] == "$[2].data.name"
    assert [(e["index"], e["line"]) for e in reply["errors"]] == [(2, 3)]
    assert await jetstream_store.last_seq() == 0
    [(subject, record)] = await rejected(nc)
    assert (
        subject == "dse.rejected.invalid"
        and record.endpoint == INGEST_BATCH_SUBJECT
        and record.field == "$[2].data.name"
    )

    lines[2] = body({**node_registered("c"), "id": "c-1"})
    code, reply = await ask(nc, b"\n".join(lines) + b"\n", INGEST_BATCH_SUBJECT)
    assert code is None
    assert [r["seq"] for r in reply["results"]] == [1, 2, 3, 4]
    assert reply["results"][2]["id"] == "c-1"
    events = [e async for e in jetstream_store.read()]
    assert [e.subject for e in events] == [
        "dse.node.a.registered",
        "dse.node.b.registered",
        "dse.node.c.registered",
        "dse.node.a.cordoned",
    ]
    code, reply = await ask(nc, body([{**node_registered("c"), "id": "c-1"}]), INGEST_BATCH_SUBJECT)
    assert code is None and reply["results"] == [{"seq": 3, "duplicate": True, "id": "c-1"}]


async def test_a_store_that_is_down_answers_503_and_keeps_serving(
    nc: Any, ingest: IngestService, streams: Any
) -> None:
    await delete_streams(nc, [d for d in streams if d.name == EVENTS_STREAM])
    code, reply = await ask(nc, body(node_registered()))
    assert code == "503" and reply["reason_code"] == "unavailable"
    assert await rejected(nc) == []  # not the caller's fault: nothing to keep
    code, reply = await ask(nc, body(node_registered("Bad_Name")))
    assert code == "400"


async def test_a_plain_publish_without_reply_is_still_appended_or_kept(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    await nc.publish(INGEST_EVENT_SUBJECT, body(node_registered("fire-and-forget")))
    await nc.publish(INGEST_EVENT_SUBJECT, b"{not json")
    async with asyncio.timeout(5):
        while await jetstream_store.last_seq() < 1 or len(await rejected(nc)) < 1:
            await asyncio.sleep(0.02)
    assert (await jetstream_store.get(1)).subject == "dse.node.fire-and-forget.registered"
    code, _ = await ask(nc, body(node_registered("still-serving")))
    assert code is None


async def test_the_micro_service_answers_discovery(nc: Any, ingest: IngestService) -> None:
    ping = json.loads((await nc.request(f"$SRV.PING.{SERVICE_NAME}", b"", timeout=2)).data)
    assert ping["name"] == SERVICE_NAME and ping["id"] == ingest.id and ping["version"]
    info = json.loads((await nc.request("$SRV.INFO", b"", timeout=2)).data)
    assert info["name"] == SERVICE_NAME and info["description"]
    assert {e["subject"] for e in info["endpoints"]} == {INGEST_EVENT_SUBJECT, INGEST_BATCH_SUBJECT}
    await ask(nc, body(node_registered("Bad_Name")))
    stats = json.loads((await nc.request(f"$SRV.STATS.{SERVICE_NAME}.{ingest.id}", b"", timeout=2)).data)
    [event_stats] = [e for e in stats["endpoints"] if e["subject"] == INGEST_EVENT_SUBJECT]
    assert event_stats["num_requests"] == 1 and event_stats["data"]["rejected"] == 1


async def test_after_stop_nobody_answers(nc: Any, ingest: IngestService) -> None:
    await ingest.stop()
    with pytest.raises(Exception, match=r"no responders|NoResponders"):
        await nc.request(INGEST_EVENT_SUBJECT, body(node_registered()), timeout=1)


_junk = (
    st.binary(max_size=400)
    | st.text(max_size=200).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["node.registered", "node.cordoned", "pod.ready", "x"]), "data": json_values}
    ).map(lambda v: json.dumps(v).encode())
)


async def test_random_input_always_gets_an_answer_and_never_breaks_the_service(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    samples: list[bytes] = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(_junk)
    def collect(data: bytes) -> None:
        samples.append(data)

    collect()
    for data in samples:
        for subject in (INGEST_EVENT_SUBJECT, INGEST_BATCH_SUBJECT):
            msg = await nc.request(subject, data, timeout=5)
            code = (msg.headers or {}).get("Nats-Service-Error-Code")
            assert code in (None, "400"), (subject, data, msg.headers)
    assert ingest.counters.failed == 0
    # every refusal was recorded (one record per refused request)
    info = await nc.jetstream().stream_info(REJECTED_STREAM)
    assert info.state.messages == ingest.counters.rejected
    code, _ = await ask(nc, body(node_registered("after-the-fuzz")))
    assert code is None
