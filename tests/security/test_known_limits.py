"""What subject permissions cannot narrow, measured (docs/deploy.md, "Roles and credentials").

A push consumer's deliver subject is part of the consumer's configuration, not of the request subject,
and nats-server does not check it against the creator's permissions: a role that may read a stream can
have the server copy its messages onto a subject someone listens to. These tests pin down what that
allows under the default setup, so that a change on either side (the server's checks, our readers) is
noticed:

- genuine commands cannot be replayed into ``DSE_COMMANDS``: a deliver subject overlapping the stream's
  own subjects is refused by the server ("forms a cycle");
- copies of *events* pushed onto ``dse.cmd.<node>`` are stored in ``DSE_COMMANDS``, and the executor
  refuses them as malformed: the pod still runs;
- copies pushed onto ``dse.ingest.event`` (the consumer naming the service's queue group as its
  deliver group) reach the ingest service as requests with a ``$JS.ACK.`` reply subject; the service
  refuses every such delivery (kept in ``DSE_REJECTED``, never appended, whatever the duplicate window).
"""

from __future__ import annotations

import asyncio

import pytest

from engine.ingest.service import serve_ingest
from engine.store.jetstream_api import JetStreamRefused, api_request, stream_info
from engine.store.jetstream_store import JetStreamEventStore
from tests.security.conftest import AUDITOR, INGEST, World

pytestmark = [pytest.mark.integration]


def _consumer(filter_subject: str, deliver: str, group: str | None = None) -> dict[str, object]:
    config: dict[str, object] = {"deliver_group": group} if group else {}
    return {
        "config": {
            **config,
            "deliver_subject": deliver,
            "filter_subject": filter_subject,
            "ack_policy": "none",
            "deliver_policy": "all",
            "inactive_threshold": 5_000_000_000,
        }
    }


async def test_a_reader_cannot_replay_commands_into_the_command_stream(world: World) -> None:
    nc = await world.bus.connect(AUDITOR)
    body = {"stream_name": "DSE_COMMANDS", **_consumer("dse.cmd.node1", "dse.cmd.node1")}
    with pytest.raises(JetStreamRefused, match="cycle"):
        await api_request(nc, "CONSUMER.CREATE.DSE_COMMANDS", body)


async def test_events_a_reader_pushes_onto_a_command_subject_are_not_commands(world: World) -> None:
    pod = world.pod_on("node1")
    before = (await stream_info(world.engine.nc, "DSE_COMMANDS")).state.last_seq
    nc = await world.bus.connect(AUDITOR)
    body = {"stream_name": "DSE_EVENTS", **_consumer("dse.node.node1.>", "dse.cmd.node1")}
    await api_request(nc, "CONSUMER.CREATE.DSE_EVENTS", body)
    await asyncio.sleep(1.0)
    assert (await stream_info(world.engine.nc, "DSE_COMMANDS")).state.last_seq > before
    after = world.pod_on("node1")
    assert after is not None and after.name == pod.name and after.ready


async def test_events_a_reader_pushes_onto_the_ingest_subject_are_refused(world: World) -> None:
    ingest_nc = await world.bus.connect(INGEST)
    store = JetStreamEventStore(ingest_nc)
    ingest = await serve_ingest(ingest_nc, store)
    try:
        before = await world.admin.last_seq()
        nc = await world.bus.connect(AUDITOR)
        # the service listens in a queue group (nats-micro's "q"): a consumer reaches it by naming it
        body = {"stream_name": "DSE_EVENTS", **_consumer("dse.node.node1.>", "dse.ingest.event", "q")}
        await api_request(nc, "CONSUMER.CREATE.DSE_EVENTS", body)
        await world.until("the copy to reach the ingest service", lambda: ingest.counters.rejected >= 1)
        assert (ingest.counters.accepted, ingest.counters.duplicates) == (0, 0)
        assert not [e async for e in world.admin.read(start_seq=before + 1, subjects=["dse.node.>"])]
    finally:
        await ingest.stop()
        await store.close()
