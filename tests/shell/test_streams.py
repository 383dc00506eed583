"""Stream definitions: applied idempotently, drift fixed where the server allows and reported where not,
and the event log refusing deletes and purges."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.store.jetstream_api import api_request, stream_info, translate_errors
from engine.store.setup import MissingStreams, check, ensure
from engine.store.streams import (
    COMMANDS_STREAM,
    EVENTS_STREAM,
    LEADER_BUCKET,
    REJECTED_STREAM,
    KvDefinition,
    StreamDefinition,
    StreamDriftError,
    apply_definitions,
    check_contract,
    delete_streams,
    load_definitions,
    with_kv_ttl,
    with_replicas,
)
from events.errors import InvalidInput, NotFound, PermanentError
from events.subjects import EVENT_SUBJECTS
from tests.contract.envelopes import envelopes

pytestmark = [pytest.mark.timeout(30)]

_NS = 1_000_000_000


def test_definitions_match_the_subject_contract() -> None:
    defs = {d.name: d for d in load_definitions()}
    assert set(defs) >= {EVENTS_STREAM, COMMANDS_STREAM, REJECTED_STREAM, "KV_dse_snapshots", "KV_dse_leader"}
    events = defs[EVENTS_STREAM].stream_config()
    assert sorted(events["subjects"]) == sorted(EVENT_SUBJECTS)
    assert events["deny_delete"] and events["deny_purge"] and events["allow_direct"]
    assert events["storage"] == "file" and events["max_age"] == 0 and events["max_bytes"] == -1
    assert events["duplicate_window"] == 120 * _NS
    assert defs[COMMANDS_STREAM].stream_config()["max_consumers"] >= 10_000


def test_a_definition_that_breaks_the_subject_contract_is_refused(tmp_path: Path) -> None:
    defs = load_definitions()
    bad = [
        msgspec.structs.replace(d, config={**d.config, "subjects": ["dse.node.>"]})
        if isinstance(d, StreamDefinition) and d.name == EVENTS_STREAM
        else d
        for d in defs
    ]
    with pytest.raises(InvalidInput, match="DSE_EVENTS subjects"):
        check_contract(bad)
    (tmp_path / "broken.json").write_text('{"kind": "stream", "config": 3}')
    with pytest.raises(InvalidInput, match=r"broken\.json"):
        load_definitions(tmp_path)


def test_leader_ttl_is_configurable() -> None:
    defs = with_kv_ttl(load_definitions(), LEADER_BUCKET, 2.5)
    (leader,) = [d for d in defs if isinstance(d, KvDefinition) and d.bucket == LEADER_BUCKET]
    config = leader.stream_config()
    assert config["max_age"] == int(2.5 * _NS) and config["duplicate_window"] == int(2.5 * _NS)
    assert config["max_msgs_per_subject"] == 1 and config["subject_delete_marker_ttl"] == 1 * _NS


@pytest.mark.integration
async def test_apply_is_idempotent(nc: Any) -> None:
    defs = load_definitions()
    await delete_streams(nc, defs)
    first = await apply_definitions(nc, defs)
    assert sorted(first.created) == sorted(d.name for d in defs) and not first.drift
    second = await apply_definitions(nc, defs)
    assert sorted(second.unchanged) == sorted(d.name for d in defs)
    assert not second.created and not second.updated and not second.drift


@pytest.mark.integration
async def test_kv_buckets_bind_with_nats_py(nc: Any, streams: Any) -> None:
    js = nc.jetstream()
    kv = await js.key_value(LEADER_BUCKET)
    rev = await kv.create("leader", b"me")
    assert (await kv.get("leader")).value == b"me"
    assert await kv.update("leader", b"me", last=rev) > rev
    snaps = await js.key_value("dse_snapshots")
    await snaps.put("projection", b"{}")


@pytest.mark.integration
async def test_fixable_drift_is_fixed(nc: Any) -> None:
    defs = load_definitions()
    await delete_streams(nc, defs)
    events = next(d for d in defs if d.name == EVENTS_STREAM).stream_config()
    drifted = {**events, "duplicate_window": 10 * _NS, "deny_purge": False, "allow_direct": False}
    await api_request(nc, f"STREAM.CREATE.{EVENTS_STREAM}", drifted)
    report = await apply_definitions(nc, defs)
    assert EVENTS_STREAM in report.updated
    fixed = {d.field for d in report.drift if d.resource == EVENTS_STREAM}
    assert fixed == {"duplicate_window", "deny_purge", "allow_direct"}
    assert all(d.fixed for d in report.drift)
    info = await api_request(nc, f"STREAM.INFO.{EVENTS_STREAM}")
    assert info["config"]["deny_purge"] is True and info["config"]["duplicate_window"] == 120 * _NS
    assert (await apply_definitions(nc, defs)).drift == []


@pytest.mark.integration
async def test_unfixable_drift_is_reported(nc: Any) -> None:
    defs = load_definitions()
    await delete_streams(nc, defs)
    rejected = next(d for d in defs if d.name == REJECTED_STREAM).stream_config()
    # someone made the rejected stream immutable and in-memory: neither can be undone in place
    await api_request(
        nc, f"STREAM.CREATE.{REJECTED_STREAM}", {**rejected, "deny_purge": True, "storage": "memory"}
    )
    with pytest.raises(StreamDriftError) as info:
        await apply_definitions(nc, defs)
    text = str(info.value)
    assert "DSE_REJECTED.deny_purge: want False, have True (NOT fixable)" in text
    assert "DSE_REJECTED.storage: want 'file', have 'memory' (NOT fixable)" in text
    assert isinstance(info.value, PermanentError)
    report = await apply_definitions(nc, defs, strict=False)
    assert {d.field for d in report.unfixable} == {"deny_purge", "storage"}


@pytest.mark.integration
async def test_events_cannot_be_deleted_or_purged(nc: Any, jetstream_store: Any) -> None:
    await jetstream_store.append_many(envelopes(3))
    with pytest.raises(PermanentError, match="10057"):
        await api_request(nc, f"STREAM.MSG.DELETE.{EVENTS_STREAM}", {"seq": 2})
    with pytest.raises(PermanentError, match="10110"):
        await api_request(nc, f"STREAM.PURGE.{EVENTS_STREAM}", {})
    # the same refusal through nats-py's own manager, mapped by translate_errors
    jsm = nc.jetstream()._jsm
    with pytest.raises(PermanentError, match="message delete not permitted"), translate_errors("delete"):
        await jsm.delete_msg(EVENTS_STREAM, 1)
    assert await jetstream_store.last_seq() == 3
    assert (await jetstream_store.get(2)).seq == 2


def test_definition_files_are_plain_server_json() -> None:
    """The stream files are the server's JSON: loadable by anything, no comments or extensions."""
    for file in sorted((Path(__file__).resolve().parents[2] / "ops" / "streams").glob("*.json")):
        data = json.loads(file.read_text())
        assert data["kind"] in ("stream", "kv"), file


@pytest.mark.integration
async def test_ensure_removes_the_durables_older_executors_left_and_nothing_else(
    nc: Any, streams: Any
) -> None:
    """Executors read with direct gets now; the per-node and fleet durables older ones made cost every
    server memory and CPU for as long as they exist. A consumer someone else made is kept."""
    for name in ("exec-fleet", "exec-node-1", "audit-tool"):
        config = {"durable_name": name, "ack_policy": "explicit", "filter_subject": "dse.cmd.>"}
        await api_request(
            nc,
            f"CONSUMER.CREATE.{COMMANDS_STREAM}.{name}",
            {"stream_name": COMMANDS_STREAM, "config": config},
        )
    await ensure(nc)
    names = (await api_request(nc, f"CONSUMER.NAMES.{COMMANDS_STREAM}"))["consumers"]
    assert names == ["audit-tool"]


# Replicas are a floor: (replicas the stream has, replicas the definition asks for, replicas after the
# apply, the drift reported for num_replicas). A single server holds R1 only, so the rows that need a
# stream with more copies than asked (kept, not downgraded) run on a real 3-node cluster in
# tests/cluster/test_stream_replicas.py; here: the rows a single server can hold.
SINGLE_SERVER_REPLICAS = [
    pytest.param(1, 1, 1, None, id="same-count-is-unchanged"),
    pytest.param(1, 0, 1, None, id="zero-means-one"),
    # asked for more than a single server can hold: refused by the server, reported, nothing changed
    pytest.param(1, 3, 1, (3, 1, False), id="raise-refused-without-a-cluster"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("have", "want", "after", "drift"), SINGLE_SERVER_REPLICAS)
@pytest.mark.parametrize("resource", [REJECTED_STREAM, f"KV_{LEADER_BUCKET}"])
async def test_replicas_are_a_floor_on_a_single_server(
    nc: Any, resource: str, have: int, want: int, after: int, drift: tuple[int, int, bool] | None
) -> None:
    defs = load_definitions()
    await delete_streams(nc, defs)
    (d,) = [x for x in defs if x.name == resource]
    await api_request(nc, f"STREAM.CREATE.{resource}", {**d.stream_config(), "num_replicas": have})
    asked = with_replicas([d], want)
    report = await apply_definitions(nc, asked, strict=False)
    info = await api_request(nc, f"STREAM.INFO.{resource}")
    assert info["config"]["num_replicas"] == after
    found = [(x.want, x.have, x.fixed) for x in report.drift if x.field == "num_replicas"]
    assert found == ([] if drift is None else [drift]), report.summary()
    if drift is None:
        assert report.unchanged == [resource]
    else:
        with pytest.raises(StreamDriftError, match=rf"{resource}\.num_replicas: want 3, have 1"):
            await apply_definitions(nc, asked)


async def test_two_processes_creating_the_same_bucket_at_once_both_start(nc: Any) -> None:
    # an engine and an executor started together: both see no bucket, both create it, with different
    # TTLs; the second create is refused ("already in use") and must be taken as "it exists now"
    defs = load_definitions()
    await delete_streams(nc, defs)
    first = with_kv_ttl(defs, "dse_leader", 2.0)
    reports = await asyncio.gather(apply_definitions(nc, first), apply_definitions(nc, defs))
    names = {d.name for d in defs}
    assert {n for r in reports for n in r.created} | {n for r in reports for n in r.updated} <= names
    info = await api_request(nc, "STREAM.INFO.KV_dse_leader")
    assert info["config"]["name"] == "KV_dse_leader"


@pytest.mark.integration
async def test_stream_info_reads_config_state_and_a_missing_stream(nc: Any) -> None:
    """The one typed ``STREAM.INFO`` reader the store, the definitions and the cluster harness share."""
    defs = load_definitions()
    await delete_streams(nc, defs)
    await apply_definitions(nc, defs)
    js = nc.jetstream()
    for i in range(3):
        await js.publish(f"dse.node.n{i}.registered", b"{}")
    info = await stream_info(nc, EVENTS_STREAM)
    assert info.config["name"] == EVENTS_STREAM and info.config["deny_delete"] is True
    assert (info.state.first_seq, info.state.last_seq, info.state.messages) == (1, 3, 3)
    assert info.cluster is None or info.cluster.replicas == ()  # a single server: no peers
    with pytest.raises(NotFound):
        await stream_info(nc, "DSE_NO_SUCH_STREAM")


@pytest.mark.integration
async def test_check_reports_drift_and_fixes_nothing(nc: Any) -> None:
    """What executors, ingest and the CLI do: read, say, never write (``engine/store/setup.py``)."""
    await ensure(nc)
    events = (await stream_info(nc, EVENTS_STREAM)).config
    await api_request(nc, f"STREAM.UPDATE.{EVENTS_STREAM}", {**events, "duplicate_window": 10 * _NS})
    report = await check(nc)
    assert [(d.resource, d.field, d.have) for d in report.pending] == [
        (EVENTS_STREAM, "duplicate_window", 10 * _NS)
    ]
    assert (await stream_info(nc, EVENTS_STREAM)).config["duplicate_window"] == 10 * _NS
    await api_request(nc, f"STREAM.DELETE.{COMMANDS_STREAM}")
    with pytest.raises(MissingStreams, match=r"stream DSE_COMMANDS\. Only the engine creates them"):
        await check(nc, needs=[COMMANDS_STREAM, EVENTS_STREAM])
    assert (await check(nc, needs=[EVENTS_STREAM])).missing == []


@pytest.mark.integration
async def test_the_leader_ttl_is_kept_unless_asked_for(nc: Any) -> None:
    first = await ensure(nc, lease_ttl=2.0)
    assert first.lease_ttl == 2.0
    again = await ensure(nc)
    assert again.lease_ttl == 2.0 and not again.streams.updated
    assert [(d.field, d.have) for d in again.streams.kept if d.resource == "KV_dse_leader"] == [
        ("max_age", 2 * _NS)
    ]
    info = (await stream_info(nc, "KV_dse_leader")).config
    assert (info["max_age"], info["duplicate_window"]) == (2 * _NS, 2 * _NS)
    asked = await ensure(nc, lease_ttl=4.0)
    assert asked.lease_ttl == 4.0 and asked.streams.updated == ["KV_dse_leader"]
    assert (await stream_info(nc, "KV_dse_leader")).config["max_age"] == 4 * _NS


@pytest.mark.integration
async def test_ensure_creates_the_snapshot_object_store_nats_py_binds_to(nc: Any) -> None:
    setup = await ensure(nc)
    assert "OBJ_dse_snapshots" in setup.streams.created
    store = await nc.jetstream().object_store("dse_snapshots")
    await store.put("projection", b"x" * 300_000)
    assert (await store.get("projection")).data == b"x" * 300_000
    assert (await ensure(nc)).streams.drift == []
