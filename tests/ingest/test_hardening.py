"""Each hole issue 12 found in the ingest service, closed, checked through a real nats-server on what a
caller gets back and what ``DSE_EVENTS`` and ``DSE_REJECTED`` hold afterwards: pod facts from a
publisher, values ending in a newline, an id that collided with another, deep nesting, an event whose
stored form is over the server's max_payload, a batch half appended, negative and NaN numbers, an
unknown field named ``$``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from engine.core.event_validation import check_event
from engine.core.validation import ManifestInvalid
from engine.ingest import atomic
from engine.ingest.service import IngestService
from engine.store.event_store import JetStreamEventStore
from engine.store.jetstream_api import JetStreamUnavailable, api_request, stream_info
from engine.store.streams import EVENTS_STREAM, apply_definitions
from events.ingest_wire import EXECUTOR_ONLY, HEADER_ROOM, MAX_DEPTH
from events.subjects import INGEST_BATCH_SUBJECT, INGEST_EVENT_SUBJECT
from events.types import Event, PodFailed, PodSucceeded, PodTerminating
from tests.ingest.samples import body, daemonset_applied, node_registered
from tests.ingest.wire import ask, events_count, rejected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

POD = {"namespace": "kube-system", "name": "agent-abcde", "node": "node-1"}


def cordoned(name: str = "node-1", **envelope: Any) -> dict[str, Any]:
    return {"type": "node.cordoned", "data": {"name": name}, **envelope}


def nested(levels: int) -> Any:
    """An object ``levels`` deep: ``{"a": {"a": ... {}}}``."""
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# --- pod facts only from executors ----------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(EXECUTOR_ONLY))
async def test_a_pod_fact_from_a_publisher_is_refused_as_executor_only(
    nc: Any, ingest: IngestService, tag: str
) -> None:
    extra = {"uid": "u-1"} if tag == "pod.created" else {}
    answer = await ask(nc, body({"type": tag, "data": {**POD, **extra}}))
    assert answer.code == "400", answer
    assert answer.body["reason_code"] == "executor_only" and answer.body["field"] == "$.type"
    assert "executor only" in answer.body["description"]
    assert await events_count(nc) == 0
    [(subject, record)] = await rejected(nc)
    assert subject == "dse.rejected.executor_only" and record.field == "$.type"


async def test_the_forged_pod_deleted_of_the_issue_is_refused_alone_and_in_a_batch(
    nc: Any, ingest: IngestService
) -> None:
    """Through ingest, ``pod.deleted`` for a live pod was accepted and the engine started a second pod on
    the node. Now neither alone nor inside an otherwise valid batch does it enter the log."""
    forged = {"type": "pod.deleted", "data": POD, "source": "kubelet-bridge"}
    answer = await ask(nc, body(forged))
    assert (answer.code, answer.body["reason_code"]) == ("400", "executor_only")
    lines = body(node_registered("node-2")) + b"\n" + body(forged)
    answer = await ask(nc, lines, INGEST_BATCH_SUBJECT)
    assert answer.code == "400" and answer.body["field"] == "$[1].type"
    assert answer.body["errors"][0]["line"] == 2
    assert await events_count(nc) == 0
    assert [s for s, _ in await rejected(nc)] == ["dse.rejected.executor_only"] * 2


# --- values ending in a newline ---------------------------------------------------------------------------


def labels(value: dict[str, str]) -> dict[str, Any]:
    return {"type": "node.labels_changed", "data": {"name": "n", "labels": value}}


TAINTED = {
    "type": "node.taints_changed",
    "data": {"name": "n", "taints": [{"key": "k\n", "effect": "NoSchedule"}]},
}
DELETED = {"type": "daemonset.deleted", "data": {"namespace": "kube-system\n", "name": "agent", "uid": "u"}}


@pytest.mark.parametrize(
    ("request_obj", "field"),
    [
        (node_registered("node-1\n"), "$.data.name"),
        (labels({"zone\n": "a"}), "$.data.labels"),
        (labels({"zone": "a\n"}), "$.data.labels.zone"),
        (TAINTED, "$.data.taints[0].key"),
        (DELETED, "$.data.namespace"),
        (cordoned(id="cmdb-7\n"), "$.id"),
        (cordoned(id="cmdb\n-7"), "$.id"),
        (cordoned(id="cmdb-7\r"), "$.id"),
    ],
)
async def test_a_value_ending_in_a_newline_is_refused_naming_its_field(
    nc: Any, ingest: IngestService, request_obj: dict[str, Any], field: str
) -> None:
    answer = await ask(nc, body(request_obj))
    assert answer.code == "400", answer
    assert answer.body["reason_code"] == "invalid" and answer.body["field"] == field
    assert "\n" not in answer.description  # the header carries it escaped
    assert await events_count(nc) == 0
    [(subject, record)] = await rejected(nc)
    assert subject == "dse.rejected.invalid" and record.field == field


async def test_an_id_with_a_newline_is_refused_not_taken_for_the_id_without_it(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    """``Nats-Msg-Id`` loses a trailing newline, so "X\\n" was dropped as a duplicate of "X"."""
    first = await ask(nc, body(cordoned(id="X")))
    assert first.code is None and first.body == {"seq": 1, "duplicate": False, "id": "X"}
    second = await ask(nc, body(cordoned("node-2", id="X\n")))
    assert second.code == "400" and second.body["field"] == "$.id"
    assert "duplicate" not in second.body
    assert [e.envelope.id async for e in jetstream_store.read()] == ["X"]
    assert len(await rejected(nc)) == 1


# --- nesting and sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1000, 100_000])
async def test_deep_nesting_is_refused_naming_the_limit_before_it_is_decoded(
    nc: Any, ingest: IngestService, levels: int
) -> None:
    deep = b'{"type": "node.registered", "data": {"name": "n", "x": ' + b"[" * levels + b"]" * levels + b"}}"
    answer = await ask(nc, deep)
    assert answer.code == "400", answer
    assert answer.body["reason_code"] == "too_large" and answer.body["limit"] == f"max_depth {MAX_DEPTH}"
    assert f"max_depth {MAX_DEPTH}" in answer.description
    lines = body(node_registered("a")) + b"\n" + deep
    answer = await ask(nc, lines, INGEST_BATCH_SUBJECT)
    assert answer.code == "400" and answer.body["field"] == "$[1]"
    assert answer.body["limit"] == f"max_depth {MAX_DEPTH}"
    array = b"[" + body(node_registered("a")) + b"," + deep + b"]"
    answer = await ask(nc, array, INGEST_BATCH_SUBJECT)
    assert answer.code == "400" and answer.body["limit"] == f"max_depth {MAX_DEPTH}"
    assert await events_count(nc) == 0
    records = await rejected(nc)
    assert [s for s, _ in records] == ["dse.rejected.too_large"] * 3
    assert {r.limit for _, r in records} == {f"max_depth {MAX_DEPTH}"}


async def test_nesting_up_to_the_limit_is_accepted(nc: Any, ingest: IngestService) -> None:
    """A pod spec is carried raw, so it may nest: request (1), data, spec, template, spec (5), then the
    rest of the 64 levels inside one pod spec field."""
    at_limit = daemonset_applied()
    at_limit["data"]["spec"]["template"]["spec"]["x-extra"] = nested(MAX_DEPTH - 5)
    answer = await ask(nc, body(at_limit))
    assert answer.code is None, answer
    over = daemonset_applied()
    over["data"]["spec"]["template"]["spec"]["x-extra"] = nested(MAX_DEPTH - 4)
    answer = await ask(nc, body(over))
    assert answer.code == "400" and answer.body["limit"] == f"max_depth {MAX_DEPTH}"


def condition_with_message(size: int, name: str = "node-1") -> bytes:
    """A node.condition_changed request of exactly ``size`` bytes (its free-text message fills it)."""
    condition = {"type": "Ready", "status": "True", "message": ""}
    empty = body({"type": "node.condition_changed", "data": {"name": name, "condition": condition}})
    return empty.replace(b'"message": ""', b'"message": "' + b"m" * (size - len(empty)) + b'"')


async def test_an_event_whose_stored_form_is_over_max_payload_is_refused_naming_the_limit(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    """The request fits the server's max_payload; the envelope the service would store (with an id, a
    time, a source and a correlation id added) does not. That was an answer 500, and nothing kept."""
    limit = nc.max_payload
    request = condition_with_message(limit - 200)
    answer = await ask(nc, request)
    assert answer.code == "400", answer
    assert answer.body["reason_code"] == "too_large" and answer.body["limit"] == f"max_payload {limit}"
    assert await events_count(nc) == 0
    [(subject, record)] = await rejected(nc)
    assert subject == "dse.rejected.too_large" and record.limit == f"max_payload {limit}"
    assert record.input_truncated and request.decode().startswith(record.input)
    # a little smaller, and it is stored whole
    fits = condition_with_message(limit - HEADER_ROOM - 600)
    answer = await ask(nc, fits)
    assert answer.code is None, answer
    assert len((await jetstream_store.get(answer.body["seq"])).envelope.data.condition.message) > limit - 3000  # type: ignore[attr-defined]


async def test_a_record_of_a_refusal_is_kept_however_much_its_input_grows_when_escaped(
    nc: Any, ingest: IngestService
) -> None:
    """A control character is one byte of input and six in the JSON record (``\\u0001``): the kept input is
    cut until the record fits, rather than the record being lost."""
    data = b'{"type": "node.registered", "data": {"name": "' + b"\x01" * (nc.max_payload - 100) + b'"}}'
    answer = await ask(nc, data)
    assert answer.code == "400" and answer.body["reason_code"] == "malformed"
    [(_, record)] = await rejected(nc)
    assert record.input_truncated and data.decode().startswith(record.input) and len(record.input) > 1000


# --- batches all or nothing ------------------------------------------------------------------------------


async def test_a_batch_with_one_event_over_max_payload_appends_none(nc: Any, ingest: IngestService) -> None:
    small = [body(cordoned("a")), body(cordoned("b"))]
    big = condition_with_message(nc.max_payload - HEADER_ROOM - 100, name="c")
    answer = await ask(nc, b"\n".join([*small, big]), INGEST_BATCH_SUBJECT)
    assert answer.code == "400", answer
    assert answer.body["field"] == "$[2]" and answer.body["limit"] == f"max_payload {nc.max_payload}"
    assert await events_count(nc) == 0
    assert len(await rejected(nc)) == 1


async def test_one_id_twice_in_a_batch_is_refused_naming_the_second(nc: Any, ingest: IngestService) -> None:
    batch = [cordoned("a", id="same"), cordoned("b", id="other"), cordoned("c", id="same")]
    answer = await ask(nc, body(batch), INGEST_BATCH_SUBJECT)
    assert answer.code == "400" and answer.body["field"] == "$[2].id"
    assert "also the id of item 0" in answer.body["description"]
    assert await events_count(nc) == 0
    assert len(await rejected(nc)) == 1


async def test_a_batch_the_server_refuses_part_way_leaves_nothing_behind(
    nc: Any, ingest: IngestService, streams: Any
) -> None:
    """An operator lowered the stream's max_msg_size: the third event is over it. Appended one by one,
    the first two stayed in the log; as one atomic batch, none does."""
    config = (await stream_info(nc, EVENTS_STREAM)).config
    await api_request(nc, f"STREAM.UPDATE.{EVENTS_STREAM}", {**config, "max_msg_size": 2000})
    batch = [body(cordoned("a")), body(cordoned("b")), condition_with_message(3000, name="c")]
    answer = await ask(nc, b"\n".join(batch), INGEST_BATCH_SUBJECT)
    assert (
        answer.code == "500" and answer.body["reason_code"] == "failed"
    )  # the store's refusal, not the input's
    assert "message size exceeds maximum allowed" in answer.body["description"]
    assert await events_count(nc) == 0
    answer = await ask(nc, b"\n".join(batch[:2]), INGEST_BATCH_SUBJECT)
    assert answer.code is None and [r["seq"] for r in answer.body["results"]] == [1, 2]


async def test_a_batch_with_an_id_already_stored_appends_the_rest_and_answers_the_original_sequence(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    """The server refuses a whole atomic batch holding an id it stored within the duplicate window; the
    service finds which, answers it as a duplicate, and appends the others as one batch."""
    assert (await ask(nc, body(cordoned("b", id="b-1")))).body["seq"] == 1
    assert (await ask(nc, body({**node_registered("x"), "id": "x-1"}))).body["seq"] == 2
    # the same id reused for another event: still a duplicate (ids are stream-wide), found anywhere
    batch = [
        cordoned("a", id="a-1"),
        cordoned("b", id="b-1"),
        cordoned("z", id="x-1"),
        cordoned("c", id="c-1"),
    ]
    answer = await ask(nc, body(batch), INGEST_BATCH_SUBJECT)
    assert answer.code is None, answer
    assert [(r["id"], r["seq"], r["duplicate"]) for r in answer.body["results"]] == [
        ("a-1", 3, False),
        ("b-1", 1, True),
        ("x-1", 2, True),
        ("c-1", 4, False),
    ]
    again = await ask(nc, body(batch), INGEST_BATCH_SUBJECT)
    assert [(r["seq"], r["duplicate"]) for r in again.body["results"]] == [
        (3, True),
        (1, True),
        (2, True),
        (4, True),
    ]
    assert [e.envelope.id async for e in jetstream_store.read()] == ["b-1", "x-1", "a-1", "c-1"]


async def test_a_batch_whose_commit_ack_was_lost_is_stored_once(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stored the batch, its answer was lost; the retry (a new batch, the same ids) is refused
    as holding duplicates, and every event is found where the first attempt put it."""
    real = atomic.AtomicBatches._results
    lost: list[int] = []

    def lose_the_first_ack(self: Any, *args: Any) -> Any:
        results = real(self, *args)
        if not lost:
            lost.append(1)
            raise JetStreamUnavailable("the commit ack was lost (simulated)")
        return results

    monkeypatch.setattr(atomic.AtomicBatches, "_results", lose_the_first_ack)
    batch = [cordoned("a", id="a-1"), cordoned("b", id="b-1")]
    answer = await ask(nc, body(batch), INGEST_BATCH_SUBJECT)
    assert answer.code is None and lost == [1]
    assert [(r["seq"], r["duplicate"]) for r in answer.body["results"]] == [(1, True), (2, True)]
    assert [e.envelope.id async for e in jetstream_store.read()] == ["a-1", "b-1"]


async def test_a_stream_without_atomic_batches_answers_503_and_appends_nothing(
    nc: Any, ingest: IngestService, streams: Any
) -> None:
    config = (await stream_info(nc, EVENTS_STREAM)).config
    assert config.get("allow_atomic") is True  # ops/streams/events.json
    await api_request(nc, f"STREAM.UPDATE.{EVENTS_STREAM}", {**config, "allow_atomic": False})
    batch = body([cordoned("a"), cordoned("b")])
    answer = await ask(nc, batch, INGEST_BATCH_SUBJECT)
    assert answer.code == "503" and answer.body["reason_code"] == "unavailable"
    assert (
        "allow_atomic" in answer.body["description"] and "dsctl admin streams" in answer.body["description"]
    )
    assert await events_count(nc) == 0 and await rejected(nc) == []  # not the caller's fault
    assert (await ask(nc, body(cordoned("a")))).code is None  # single events still go in
    await apply_definitions(nc, [d for d in streams if d.name == EVENTS_STREAM])  # what the engine does
    answer = await ask(nc, batch, INGEST_BATCH_SUBJECT)
    assert answer.code is None and [r["seq"] for r in answer.body["results"]] == [2, 3]


# --- numbers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "field"),
    [
        ({"cpu": "NaN"}, "$.data.capacity.cpu"),
        ({"memory": "-4"}, "$.data.capacity.memory"),
        ({"memory": "-4Gi"}, "$.data.capacity.memory"),
        ({"cpu": "Infinity"}, "$.data.capacity.cpu"),
        ({"cpu": "4\n"}, "$.data.capacity.cpu"),
        ({"cpu": ""}, "$.data.capacity.cpu"),
        ({"cpu": "1Zi"}, "$.data.capacity.cpu"),
        ({"bad key": "1"}, "$.data.capacity"),
    ],
)
async def test_a_capacity_that_is_no_quantity_or_negative_is_refused_naming_the_field(
    nc: Any, ingest: IngestService, capacity: dict[str, str], field: str
) -> None:
    answer = await ask(nc, body(node_registered(capacity=capacity)))
    assert answer.code == "400" and answer.body["reason_code"] == "invalid", answer
    assert answer.body["field"] == field
    assert len(await rejected(nc)) == 1 and await events_count(nc) == 0


async def test_quantities_as_kubernetes_writes_them_are_accepted(
    nc: Any, ingest: IngestService, jetstream_store: JetStreamEventStore
) -> None:
    capacity = {
        "cpu": "3500m",
        "memory": "16Gi",
        "pods": "110",
        "nvidia.com/gpu": "2",
        "ephemeral-storage": "1e11",
    }
    answer = await ask(nc, body(node_registered(capacity=capacity)))
    assert answer.code is None, answer
    assert (await jetstream_store.get(1)).envelope.data.capacity == capacity  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("event", "path"),
    [
        (PodFailed(**POD, exit_code=-1), "$.data.exit_code"),
        (PodSucceeded(**POD, exit_code=-9), "$.data.exit_code"),
        (PodTerminating(**POD, grace_period_seconds=-30), "$.data.grace_period_seconds"),
    ],
)
def test_negative_exit_codes_and_grace_periods_are_refused_whoever_reports_them(
    event: Event, path: str
) -> None:
    """Pod facts never come through ingest now; the rule is the same for every door into the log."""
    with pytest.raises(ManifestInvalid) as info:
        check_event(event)
    assert info.value.paths == [path]


async def test_a_negative_grace_period_in_a_daemonset_is_refused_naming_the_field(
    nc: Any, ingest: IngestService
) -> None:
    request = daemonset_applied()
    request["data"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = -1
    answer = await ask(nc, body(request))
    assert answer.code == "400"
    assert answer.body["field"] == "$.data.spec.template.spec.terminationGracePeriodSeconds"


# --- unknown fields ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "subject", "field"),
    [
        (body({**cordoned(), "colour": "red"}), INGEST_EVENT_SUBJECT, "$.colour"),
        (body({**cordoned(), "with space": 1}), INGEST_EVENT_SUBJECT, '$["with space"]'),
        (
            body({"type": "node.cordoned", "data": {"name": "n", "colour": 1}}),
            INGEST_EVENT_SUBJECT,
            "$.data.colour",
        ),
        (
            body([cordoned(), {**cordoned(), "corelation_id": "x"}]),
            INGEST_BATCH_SUBJECT,
            "$[1].corelation_id",
        ),
        (body({"data": {"name": "n"}}), INGEST_EVENT_SUBJECT, "$.type"),
    ],
)
async def test_an_unknown_or_missing_envelope_field_is_named_by_its_path(
    nc: Any, ingest: IngestService, data: bytes, subject: str, field: str
) -> None:
    answer = await ask(nc, data, subject)
    assert answer.code == "400" and answer.body["reason_code"] == "malformed"
    assert answer.body["field"] == field
    [(_, record)] = await rejected(nc)
    assert record.field == field


def test_the_limits_are_in_the_printed_contract() -> None:
    from events.schema import json_schema_document

    doc = json.loads(json.dumps(json_schema_document("0")))
    assert doc["executor_only"] == sorted(EXECUTOR_ONLY)
    assert doc["limits"]["max_depth"] == MAX_DEPTH
    assert set(doc["reason_codes"]) >= {"malformed", "invalid", "engine_only", "executor_only", "too_large"}
    assert (
        "limit"
        in msgspec.json.decode(json.dumps(doc["ingest"]["error"]))["$defs"]["ErrorReply"]["properties"]
    )


async def test_stored_records_replayed_onto_the_ingest_subject_by_a_consumer_are_refused(
    nc: Any, ingest: IngestService
) -> None:
    """A role that may read a stream may also have the server push its records to any subject (a push
    consumer's deliver subject is not checked against permissions). Pushed onto the ingest subject,
    old facts would be appended again once the duplicate window is past: such deliveries carry a
    ``$JS.ACK.`` reply subject and are refused, kept, never appended."""
    answer = await ask(nc, body(node_registered("node-9")))
    assert answer.code is None, answer
    assert await events_count(nc) == 1
    config = {
        "deliver_subject": INGEST_EVENT_SUBJECT,
        "deliver_group": "q",  # the service listens in nats micro's queue group
        "ack_policy": "explicit",
        "deliver_policy": "all",
        "ack_wait": 30 * 1_000_000_000,
    }
    await api_request(
        nc, f"CONSUMER.CREATE.{EVENTS_STREAM}", {"stream_name": EVENTS_STREAM, "config": config}
    )
    for _ in range(100):
        records = await rejected(nc)
        if records:
            break
        await asyncio.sleep(0.05)
    [(_, record)] = records
    assert record.field == "reply" and "$JS.ACK" in record.reason
    assert await events_count(nc) == 1
