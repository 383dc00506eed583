"""The 3-node cluster harness itself: three routed servers with one meta leader, R3 streams with a
leader and current followers, and a SIGKILLed stream leader replaced by an election, its server back on
the same ports and store, every acknowledged message still there."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.jetstream_api import api_request
from events.errors import DsctlError

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

#: an election after a SIGKILL waits for a follower's election timer (4-9 s on nats-server 2.15), so
#: a new leader within this bound is healthy; a clean stop hands over in well under a second
ELECTION_BOUND = 30.0


async def test_three_routed_servers_share_a_meta_leader_and_hold_r3_streams(
    nats_cluster: EmbeddedCluster, cluster_nc: Any, r3_streams: Any
) -> None:
    status = nats_cluster.status()
    assert [s.running and s.healthy for s in status] == [True, True, True], status
    assert (
        len({s.name for s in status})
        == len({s.url for s in status})
        == len({s.store_dir for s in status})
        == 3
    )
    leader = nats_cluster.meta_leader()
    assert leader in nats_cluster.names
    assert {s.meta_leader for s in status} == {leader}
    for d in r3_streams:
        info = await api_request(cluster_nc, f"STREAM.INFO.{d.name}")
        assert info["config"]["num_replicas"] == 3, d.name
        placement = await nats_cluster.placement(d.name, nc=cluster_nc)
        assert placement.peers == sorted(nats_cluster.names), placement
        assert placement.all_current, placement
    assert await nats_cluster.kv_leader("dse_leader", nc=cluster_nc) in nats_cluster.names
    # index and name address the same server
    assert nats_cluster.server(status[1].name) is nats_cluster.server(1)


async def _publish_acked(nc: Any, count: int, start: int, *, within: float) -> dict[int, str]:
    """Publish ``count`` messages (the payload is the message id), retrying a refused or unanswered
    publish with the same id until acknowledged (bounded); returns {seq: id} of every acknowledgement."""
    js = nc.jetstream()
    acked: dict[int, str] = {}
    deadline = time.monotonic() + within
    for i in range(start, start + count):
        msg_id = f"m-{i}"
        while True:
            try:
                ack = await js.publish(
                    "harness.x", msg_id.encode(), timeout=1.0, headers={"Nats-Msg-Id": msg_id}
                )
            except Exception as err:  # any refusal is retried; the deadline bounds it
                if time.monotonic() > deadline:
                    raise AssertionError(f"{msg_id} not acknowledged within {within}s: {err!r}") from err
                await asyncio.sleep(0.1)
                continue
            acked[ack.seq] = msg_id
            break
    return acked


async def _read_all(nc: Any, last: int) -> dict[int, str]:
    """Every message 1..last through the stream leader (STREAM.MSG.GET, not a replica's direct get)."""
    import base64

    out: dict[int, str] = {}
    for seq in range(1, last + 1):
        msg = (await api_request(nc, "STREAM.MSG.GET.HARNESS", {"seq": seq}))["message"]
        out[int(msg["seq"])] = base64.b64decode(msg["data"]).decode()
    return out


async def test_a_killed_stream_leader_is_replaced_and_nothing_acknowledged_is_lost(
    nats_cluster: EmbeddedCluster, cluster_nc: Any
) -> None:
    config = {"name": "HARNESS", "subjects": ["harness.>"], "storage": "file", "num_replicas": 3}
    await api_request(cluster_nc, "STREAM.CREATE.HARNESS", config)
    old = await nats_cluster.wait_for_stream_leader("HARNESS", timeout=20, all_current=True, nc=cluster_nc)
    acked = await _publish_acked(cluster_nc, 200, 0, within=10)
    assert sorted(acked) == list(range(1, 201))

    killed_at = time.monotonic()
    nats_cluster.kill(old)
    assert not nats_cluster.server(old).running
    new = await nats_cluster.wait_for_stream_leader("HARNESS", timeout=ELECTION_BOUND, not_on=old)
    election = time.monotonic() - killed_at
    print(f"stream election after SIGKILL of {old}: {new} leads after {election:.1f}s")
    assert new != old and new in nats_cluster.running_names()

    # the two survivors are a quorum: appends are acknowledged again
    acked |= await _publish_acked(cluster_nc, 50, 200, within=15)
    assert sorted(acked) == list(range(1, 251))

    await asyncio.to_thread(nats_cluster.start_server, old)
    await nats_cluster.wait_for_stream_leader(
        "HARNESS", timeout=ELECTION_BOUND, all_current=True, nc=cluster_nc
    )
    placement = await nats_cluster.placement("HARNESS", nc=cluster_nc)
    assert placement.peers == sorted(nats_cluster.names) and placement.last_seq == 250, placement

    # the restarted server rejoined with everything: make it the leader and read it all from it
    deadline = time.monotonic() + ELECTION_BOUND
    while (leader := await nats_cluster.stream_leader("HARNESS", nc=cluster_nc)) != old:
        assert time.monotonic() < deadline, f"{old} never took the lead back (leader {leader})"
        with contextlib.suppress(DsctlError):  # mid-handover nobody answers; look again
            await api_request(
                cluster_nc, "STREAM.LEADER.STEPDOWN.HARNESS", {"placement": {"preferred": old}}, timeout=2
            )
        await asyncio.sleep(0.2)
    assert await _read_all(cluster_nc, 250) == acked
