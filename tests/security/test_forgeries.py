"""Each forgery tried against the unsecured setup, tried again against the default (secured) one: the
bus refuses it (the server logs the refusal naming the role and subject), and the world shows nothing
happened (the pod still runs, the stream is there, the engine still leads, nothing was appended).

The forgers are the roles that could be stolen or misused: a client with no credentials, an executor
(of node1 itself, or of another node), a publisher (another service), the ingest service, the
auditor, the fleet; only the admin may do everything.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest
from nats.aio.client import Client

from engine.store.jetstream_api import stream_info
from engine.store.lease import LEASE_KEY
from events import codec
from events.errors import PermanentError
from events.subjects import EVENTS_STREAM, LEADER_SUBJECT, command_subject, decision_subject
from events.types import DeletePod
from tests.security.conftest import (
    AUDITOR,
    ENGINE,
    FLEET,
    INGEST,
    NODE1,
    NODE2,
    NOT_ADMIN,
    PUBLISHER,
    Bus,
    World,
)

pytestmark = [pytest.mark.integration]


async def test_a_client_without_credentials_is_refused_at_the_door(bus: Bus) -> None:
    with pytest.raises(PermanentError, match="Authorization Violation"):
        await bus.connect(None)


def _delete(pod: object) -> bytes:
    return codec.encode_command(
        DeletePod(
            id=str(uuid.uuid4()),
            node=pod.node,  # type: ignore[attr-defined]
            namespace=pod.namespace,  # type: ignore[attr-defined]
            pod_name=pod.name,  # type: ignore[attr-defined]
            reason="forged",
        )
    )


async def _publish(nc: Client, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
    await nc.publish(subject, data, headers=headers)
    await nc.flush()


#: who forges: each in turn, against one world (a world per forger would cost seconds each)
FORGERS = (NODE1, NODE2, FLEET, PUBLISHER, INGEST, AUDITOR)


async def test_a_forged_delete_pod_command_is_refused_and_not_carried_out(world: World) -> None:
    pod = world.pod_on("node1")
    commands = (await stream_info(world.engine.nc, "DSE_COMMANDS")).state.last_seq
    subject = command_subject("node1")
    for forger in (NODE1, NODE2, PUBLISHER, INGEST, AUDITOR):
        nc = await world.bus.connect(forger)
        await _publish(nc, subject, _delete(pod), {"Nats-Msg-Id": str(uuid.uuid4())})
        await world.bus.refused(forger, subject)
    # the executor does not carry it out: nothing reached the command stream, and the pod still runs
    await asyncio.sleep(1.0)
    assert (await stream_info(world.engine.nc, "DSE_COMMANDS")).state.last_seq == commands
    after = world.pod_on("node1")
    assert after is not None and after.name == pod.name and after.ready and after.phase == "Running"
    assert not [e for e in world.state.pods.values() if e.deletion_timestamp is not None]


async def test_an_executor_cannot_listen_to_another_nodes_commands_nor_report_for_its_pods(
    world: World,
) -> None:
    nc = await world.bus.connect(NODE2)
    await nc.subscribe(command_subject("node1"))
    await nc.flush()
    await world.bus.refused(NODE2, command_subject("node1"))
    pod = world.pod_on("node1")
    report = f"dse.pod.node1.{pod.namespace}.{pod.name}.deleted"
    await _publish(nc, report, b"{}")
    await world.bus.refused(NODE2, report)


async def test_only_the_admin_may_delete_or_purge_the_event_stream(world: World) -> None:
    for role in NOT_ADMIN:
        nc = await world.bus.connect(role)
        for verb in ("DELETE", "PURGE"):
            subject = f"$JS.API.STREAM.{verb}.{EVENTS_STREAM}"
            await _publish(nc, subject, b"", None)
            await world.bus.refused(role, subject)
    info = await stream_info(world.engine.nc, EVENTS_STREAM)
    assert info.state.first_seq == 1 and info.state.last_seq > 0
    assert world.engine.leading.is_set()


async def test_only_the_engine_may_write_the_leader_lease(world: World) -> None:
    subject = f"$KV.dse_leader.{LEASE_KEY}"
    for role in FORGERS:
        nc = await world.bus.connect(role)
        await _publish(nc, subject, b"usurper")
        await world.bus.refused(role, subject)
    await asyncio.sleep(1.0)  # a renewal or two later (TTL 2 s): the engine still holds it
    kv = await world.engine.nc.jetstream().key_value("dse_leader")
    assert (await kv.get(LEASE_KEY)).value == b"engine-under-test"
    assert world.engine.leading.is_set()


async def test_a_decision_or_leader_marker_is_appended_by_the_engine_only(world: World) -> None:
    # well-formed records: a copy of what the engine itself wrote, under a new id
    stored = [e async for e in world.admin.read(subjects=["dse.decision.>"])]
    leader = next(e for e in stored if e.subject == LEADER_SUBJECT)
    decision = next(e for e in stored if e.subject != LEADER_SUBJECT)
    forged_ids = set()
    for role in FORGERS:
        nc = await world.bus.connect(role)
        for subject, event in ((LEADER_SUBJECT, leader), (decision_subject("default", "agent"), decision)):
            forged = msgspec.structs.replace(event.envelope, id=str(uuid.uuid4()))
            forged_ids.add(forged.id)
            await _publish(nc, subject, codec.encode(forged), {"Nats-Msg-Id": forged.id})
            await world.bus.refused(role, subject)
    await asyncio.sleep(0.5)
    assert not {e.envelope.id async for e in world.admin.read()} & forged_ids
    assert world.engine.leading.is_set()


async def test_the_engine_itself_may_not_write_facts_reports_or_the_executors_keys(world: World) -> None:
    nc = await world.bus.connect(ENGINE)
    for subject in (
        "dse.node.node9.registered",
        "dse.pod.node1.default.x.deleted",
        "dse.ingest.event",
        "$KV.dse_node_leases.node1",
        "$JS.API.STREAM.DELETE.DSE_COMMANDS",
    ):
        await _publish(nc, subject, b"{}")
        await world.bus.refused(ENGINE, subject)
