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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from engine.cli.verify import VerifyReport, verify
from engine.store.embedded_cluster import EmbeddedCluster
from engine.store.jetstream_store import JetStreamEventStore
from engine.store.port import AppendResult
from engine.store.streams import EVENTS_STREAM
from events.envelope import Envelope
from projections.model import ClusterState
from projections.replay import replay
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


class AckLedger:
    """Every append the store acknowledged, as (seq, message id): what the cluster promised to keep.

    Observes the one store object the engine, the executor, the applier and the node operations all
    append through, by wrapping its append methods on the instance (behaviour unchanged)."""

    def __init__(self, store: JetStreamEventStore) -> None:
        self.acked: dict[int, str] = {}
        for name in ("append", "append_many", "append_many_settled", "append_raw"):
            method = getattr(store, name, None)
            if method is not None:
                setattr(store, name, self._wrap(name, method))

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def recorded(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            if name == "append":
                self._note(result, args[0].id)
            elif name == "append_raw":
                self._note(result, kwargs.get("msg_id") or "")
            else:
                for envelope, outcome in zip(args[0], result, strict=True):
                    self._note(outcome, envelope.id)
            return result

        return recorded

    def _note(self, result: Any, msg_id: str) -> None:
        if isinstance(result, AppendResult):
            self.acked[result.seq] = msg_id


async def read_log(store: JetStreamEventStore) -> list[tuple[int, Envelope]]:
    """The whole event log as it is now, in order (an ordered consumer, bounded by the store's stall
    timeout)."""
    return [(e.seq, e.envelope) async for e in store.read()]


def rollout_done(state: ClusterState) -> bool:
    ds_state = state.daemonsets.get(DS_KEY)
    if ds_state is None:
        return False
    pods = pods_of(state, "agent")
    return (
        sorted(p.node for p in pods) == NODES
        and all(p.revision_hash == ds_state.template_hash and p.ready for p in pods)
        and all(p.deletion_timestamp is None for p in pods)
    )


def orphan_fields(report: VerifyReport) -> dict[str, Any]:
    """Fields an effects audit may add to the verify report (orphan commands and the like)."""
    return {
        f.name: getattr(report, f.name) for f in msgspec.structs.fields(report) if "orphan" in f.name.lower()
    }


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
    log = await read_log(c.store)
    after = {seq: env.id for seq, env in log}
    lost_before = {seq: i for seq, i in before.items() if after.get(seq) != i}
    lost_acked = {seq: i for seq, i in ledger.acked.items() if after.get(seq) != i}
    if lost_before:
        problems.append(
            f"{len(lost_before)} events in the log before the kill are gone or changed: {lost_before}"
        )
    if lost_acked:
        problems.append(f"{len(lost_acked)} acknowledged appends are missing from the log: {lost_acked}")
    doubled = sorted(i for i, n in Counter(after.values()).items() if n > 1)
    if doubled:
        problems.append(f"event ids stored twice (a retry not deduplicated): {doubled}")
    replayed = replay(log)
    if not rollout_error and not rollout_done(replayed):
        problems.append("the live state says the rollout completed, but a replay of the log does not")

    report = await verify(c.store)
    if report.mismatches:
        problems.append(f"replay verify: {len(report.mismatches)} mismatches: {report.mismatches[:5]}")
    for field, value in orphan_fields(report).items():
        if value:
            problems.append(f"replay verify: {field} = {value}")

    assert not problems, (
        f"run {run}: after SIGKILL of {victim} (DSE_EVENTS leader) mid-rollout:\n- "
        + "\n- ".join(problems)
        + f"\nacknowledged appends: {len(ledger.acked)}, log: {len(after)} events, "
        f"verify checked {report.checked} decisions\n" + (rollout_error or describe(c.state))
    )
