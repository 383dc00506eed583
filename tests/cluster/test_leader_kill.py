"""Issue 9, item 8: SIGKILL the server that leads ``DSE_EVENTS`` in the middle of a rolling update on a
3-node cluster with R3 streams. The rollout must still complete (every pod on the new revision, ready,
one per node), no acknowledged event may be lost, and ``replay verify`` must pass.

The engine and a simulated fleet executor run in-process (``tests.e2e.harness.Cluster``) on one
connection to all three servers. An election after a SIGKILL takes seconds (a follower's 4-9 s election
timer), during which appends fail or go unanswered: that is the window the engine and the executor have
to ride out. Every outcome is collected first and the test then fails once, naming each broken promise,
with the state dump.

``DSCTL_LEADER_KILL_RUNS=N`` repeats the scenario N times (a fresh cluster each); CI runs it once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.streams import EVENTS_STREAM
from projections.model import ClusterState
from tests.cluster import checks
from tests.cluster.checks import AckLedger, Audit, read_log
from tests.cluster.conftest import LEASE_TTL, REPLICAS
from tests.e2e.harness import Cluster, describe, nodes_yaml, pods_of
from tests.e2e.test_rollouts import DS

RUNS = int(os.environ.get("DSCTL_LEADER_KILL_RUNS", "1"))
NODES = [f"node{i}" for i in range(1, 7)]
DS_KEY = "default/agent"
#: bounds: the rollout after the kill (it includes one election of seconds), and the election itself
ROLLOUT_BOUND = 60.0
ELECTION_BOUND = 30.0

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60 + 2 * ROLLOUT_BOUND)]


def ds(version: str) -> str:
    # a little readiness delay per pod, so a rollout over 6 nodes lasts long enough to be hit mid-way
    return DS.format(
        version=version,
        strategy="      maxUnavailable: 1",
        annotations='        sim.dsctl.io/ready-after: "0.4"',
    )


def rollout_done(state: ClusterState) -> bool:
    return checks.rollout_done(state, DS_KEY, NODES)


@pytest.fixture
async def r3_cluster(nats_cluster: EmbeddedCluster, cluster_nc: Any) -> AsyncIterator[Cluster]:
    c = Cluster(cluster_nc, lease_ttl=LEASE_TTL, replicas=REPLICAS)
    try:
        await c.start(ready_after=0.4)
        for name in (EVENTS_STREAM, "DSE_COMMANDS", "KV_dse_leader"):
            await nats_cluster.wait_for_stream_leader(name, timeout=20, all_current=True, nc=cluster_nc)
        yield c
    finally:
        await c.stop()


@pytest.mark.parametrize("run", range(RUNS))
async def test_a_rollout_survives_a_sigkill_of_the_event_log_leader(
    run: int, nats_cluster: EmbeddedCluster, cluster_nc: Any, r3_cluster: Cluster
) -> None:
    c = r3_cluster
    ledger = AckLedger(c.store)
    await c.apply(nodes_yaml(*NODES))
    await c.apply(ds("1"))
    await c.wait("v1 on every node", rollout_done, timeout=30)
    old_hash = c.state.daemonsets[DS_KEY].template_hash

    await c.apply(ds("2"))
    new_hash = c.state.daemonsets[DS_KEY].template_hash
    assert new_hash != old_hash
    # mid-rollout: the first v2 pod exists, the others are still v1
    await c.wait(
        "the rollout under way",
        lambda s: any(p.revision_hash == new_hash for p in pods_of(s, "agent")),
        timeout=15,
    )
    before = {seq: env.id for seq, env in await read_log(c.store)}
    victim = await nats_cluster.stream_leader(EVENTS_STREAM, nc=cluster_nc)
    assert victim is not None, "DSE_EVENTS has no leader before the kill"
    on_victim = {
        name: await nats_cluster.stream_leader(name, nc=cluster_nc) == victim
        for name in ("DSE_COMMANDS", "KV_dse_leader", "KV_dse_snapshots")
    }
    v2_at_kill = sum(1 for p in pods_of(c.state, "agent") if p.revision_hash == new_hash)

    killed_at = time.monotonic()
    nats_cluster.kill(victim)
    problems: list[str] = []
    try:
        successor = await nats_cluster.wait_for_stream_leader(
            EVENTS_STREAM, timeout=ELECTION_BOUND, not_on=victim
        )
        election = time.monotonic() - killed_at
    except Exception as err:
        successor, election = "-", float("nan")
        problems.append(f"DSE_EVENTS elected no new leader within {ELECTION_BOUND:g}s: {err}")

    rollout_error = ""
    try:
        await c.wait("v2 on every node, ready, one each", rollout_done, timeout=ROLLOUT_BOUND)
    except AssertionError as err:
        rollout_error = str(err)
        problems.append(f"the rollout did not complete within {ROLLOUT_BOUND:g}s of the kill")
    rollout = time.monotonic() - killed_at
    also = [n for n, on in on_victim.items() if on] or "nothing else"
    print(
        f"run {run}: killed {victim} (also leading: {also}) "
        f"with {v2_at_kill}/{len(NODES)} pods on v2; DSE_EVENTS led by {successor} after {election:.1f}s; "
        f"rollout {'done' if not rollout_error else 'NOT done'} {rollout:.1f}s after the kill"
    )

    # the victim comes back on its ports and store and catches up; the log is read with all three
    await asyncio.to_thread(nats_cluster.start_server, victim)
    try:
        await nats_cluster.wait_for_stream_leader(EVENTS_STREAM, timeout=20, all_current=True, nc=cluster_nc)
    except Exception as err:
        problems.append(f"{victim}, restarted on its store, did not catch up on DSE_EVENTS: {err}")
    audit = Audit(ledger, before)
    problems += await audit.run(c.store, cluster_nc, ds_key=DS_KEY, nodes=NODES, live_done=not rollout_error)
    assert not problems, (
        f"run {run}: after SIGKILL of {victim} (DSE_EVENTS leader) mid-rollout:\n- "
        + "\n- ".join(problems)
        + f"\n{audit.summary()}\n"
        + (rollout_error or describe(c.state))
    )
