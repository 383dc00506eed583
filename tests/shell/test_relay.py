"""The command relay against a real nats-server: what lands on DSE_COMMANDS, where the relay resumes,
and that an outage of the command stream delays commands but never loses them."""

from __future__ import annotations

from typing import Any

import pytest

from engine.reconciler.relay import (
    COMMANDS_STREAM,
    DECISION_SEQ_HEADER,
    RELAYED_FROM_HEADER,
    JetStreamCommandSink,
)
from engine.store.jetstream_api import api_request
from engine.store.streams import apply_definitions, load_definitions
from events.subjects import command_subject
from events.types import DeletePod
from tests.e2e.harness import Cluster, nodes_yaml, running_nodes
from tests.outage import until
from tests.shell.test_controller import DS

pytestmark = pytest.mark.integration


def _delete(i: int, node: str = "node-a") -> DeletePod:
    return DeletePod(id=f"cmd-{i}", node=node, namespace="default", pod_name=f"pod-{i}", reason="test")


async def test_commands_carry_their_decision_and_the_position_is_the_last_relayed_one(
    nc: Any, streams: Any
) -> None:
    sink = JetStreamCommandSink(nc)
    assert await sink.position() is None
    await sink.publish([(7, _delete(1)), (7, _delete(2, "node-b"))], relayed_from=7)
    await sink.publish([(12, _delete(3)), (15, _delete(4))], relayed_from=12)
    await sink.publish([(12, _delete(3))], relayed_from=12)  # a repeat: deduplicated by the command id
    info = await api_request(nc, f"STREAM.INFO.{COMMANDS_STREAM}")
    assert info["state"]["messages"] == 4
    got = await nc.jetstream().get_msg(COMMANDS_STREAM, subject=command_subject("node-b"))
    assert got.headers[DECISION_SEQ_HEADER] == "7" and got.headers["Nats-Msg-Id"] == "cmd-2"
    last = await nc.jetstream().get_msg(COMMANDS_STREAM, seq=4)
    assert (last.headers[DECISION_SEQ_HEADER], last.headers[RELAYED_FROM_HEADER]) == ("15", "12")
    # a command sent outside any decision (a user's `delete pod`) does not move the position
    await nc.jetstream().publish(command_subject("node-c"), b"{}", headers={"Nats-Msg-Id": "user-1"})
    assert await sink.position() == 12


async def test_commands_recorded_while_the_command_stream_is_gone_are_sent_once_it_is_back(
    nc: Any, streams: Any
) -> None:
    cluster = await Cluster(nc).start()
    try:
        await cluster.apply(nodes_yaml("node-a", "node-b"))
        commands = [d for d in load_definitions() if d.name == COMMANDS_STREAM]
        await api_request(nc, f"STREAM.DELETE.{COMMANDS_STREAM}")
        await cluster.apply(DS.format(name="agent"))
        await cluster.wait("the decision is recorded", lambda s: bool(s.in_flight))
        engine = cluster.engine
        assert engine is not None
        # the relay is retrying: nothing can be stored. (Its publishes time out rather than fail at
        # once: the executor's wake-up subscription on the command subjects is a responder of sorts.)
        await until("the relay reports its failure", lambda: engine.metrics.relay_failing_seconds > 0, 20)
        assert running_nodes(cluster.state, "agent") == []
        await apply_definitions(nc, commands)
        await cluster.wait(
            "both pods run once the stream is back",
            lambda s: running_nodes(s, "agent") == ["node-a", "node-b"],
            timeout=30,
        )
        assert engine.metrics.relay_failing_seconds == 0
    finally:
        await cluster.stop()
