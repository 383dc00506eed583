"""Crashes and failover: engines as real processes (killed with SIGKILL), the server restarted on its
store, two engines racing for the lease, a deposed leader's late write, a redelivered command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.reconciler.controller import DecisionWriter, LeadershipLost
from engine.store.event_store import JetStreamEventStore
from events import codec
from events.k8s import PodTemplate, TemplateMetadata
from events.subjects import command_subject
from events.types import CreatePod, DecisionRecorded, LeaderElected, PodCreated
from projections.model import ClusterState
from tests.e2e.harness import Cluster, nodes_yaml, pods_of
from tests.e2e.test_rollouts import DS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NODES = [f"node{i}" for i in range(1, 6)]
LEASE_TTL = 1.0


def ds(version: str) -> str:
    return DS.format(
        version=version,
        strategy="      maxUnavailable: 1",
        annotations='        sim.dsctl.io/ready-after: "0.3"',
    )


class EngineProcess:
    """``dsctl engine run`` as a child process."""

    def __init__(self, url: str, identity: str, log_dir: Path) -> None:
        self.identity = identity
        self.log_path = log_dir / f"{identity}.log"
        self._log = self.log_path.open("ab")
        env = dict(os.environ, DSCTL_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "engine", "run", "--nats", url,
             "--lease-ttl", str(LEASE_TTL), "--identity", identity],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[EngineProcess]]:
    procs: list[EngineProcess] = []
    yield procs
    for p in procs:
        p.stop()


class Invariants:
    """Watches every folded event: no node ever has two live pods of one revision of the DaemonSet."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def __call__(self, state: ClusterState) -> None:
        seen: dict[tuple[str, str], str] = {}
        for p in pods_of(state, "agent"):
            if p.deletion_timestamp is not None or p.terminal:
                continue
            key = (p.node, p.revision_hash)
            if key in seen:
                self.violations.append(
                    f"seq {state.seq}: {seen[key]} and {p.name} on {p.node} ({p.revision_hash})"
                )
            seen[key] = p.name


@pytest.fixture
async def fleet(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    """The executor and an observing projection in-process; engines run as child processes."""
    c = await Cluster(nc, lease_ttl=LEASE_TTL).start(engine=False)
    try:
        yield c
    finally:
        await c.stop()


def converged(state: ClusterState, revision: str) -> bool:
    pods = pods_of(state, "agent")
    return (
        len(pods) == len(NODES)
        and all(p.revision_hash == revision and p.ready for p in pods)
        and not state.in_flight
    )


async def _start_rollout(fleet: Cluster, engines: list[EngineProcess], url: str, tmp: Path) -> str:
    engines.append(EngineProcess(url, "engine-a", tmp))
    await fleet.apply(nodes_yaml(*NODES))
    await fleet.apply(ds("1"))
    v1 = fleet.state.daemonsets["default/agent"].template_hash
    await fleet.wait("v1 everywhere", lambda s: converged(s, v1), timeout=30)
    await fleet.apply(ds("2"))
    v2 = fleet.state.daemonsets["default/agent"].template_hash
    await fleet.wait(
        "the rollout under way", lambda s: any(p.revision_hash == v2 for p in pods_of(s, "agent"))
    )
    return v2


async def test_an_engine_killed_mid_rollout_is_replaced_and_the_rollout_converges(
    fleet: Cluster, engines: list[EngineProcess], nats_server: Any, tmp_path: Path
) -> None:
    watch = Invariants()
    fleet.observers.append(watch)
    v2 = await _start_rollout(fleet, engines, nats_server.url, tmp_path)
    assert not converged(fleet.state, v2)
    engines[0].kill()
    engines.append(EngineProcess(nats_server.url, "engine-b", tmp_path))
    await fleet.wait("v2 everywhere after the crash", lambda s: converged(s, v2), timeout=45)
    assert watch.violations == []
    leaders = {
        d.leader
        for d in await _decisions(fleet)
        if any(p.revision_hash == v2 for p in pods_of(fleet.state, "agent"))
    }
    assert "engine-b" in leaders, "the second engine never reconciled"


async def test_the_server_restarted_on_its_store_mid_rollout_loses_nothing(
    fleet: Cluster, engines: list[EngineProcess], nats_server: Any, tmp_path: Path
) -> None:
    watch = Invariants()
    fleet.observers.append(watch)
    v2 = await _start_rollout(fleet, engines, nats_server.url, tmp_path)
    before = fleet.state.seq
    await nats_server.restart()
    await fleet.wait("v2 everywhere after the server restart", lambda s: converged(s, v2), timeout=60)
    assert fleet.state.seq > before
    assert watch.violations == []
    assert engines[0].proc.poll() is None, "the engine should ride out a server restart"


async def _decisions(fleet: Cluster) -> list[DecisionRecorded]:
    out = []
    async with contextlib.aclosing(fleet.store.read(subjects=["dse.decision.*.*"])) as events:
        async for stored in events:
            if isinstance(stored.envelope.data, DecisionRecorded):
                out.append(stored.envelope.data)
    return out


async def _elections(fleet: Cluster) -> list[tuple[datetime, LeaderElected]]:
    out = []
    async with contextlib.aclosing(fleet.store.read(subjects=["dse.decision._leader"])) as events:
        async for stored in events:
            data = stored.envelope.data
            assert isinstance(data, LeaderElected)
            out.append((stored.time, data))
    return out


async def test_two_engines_one_leads_and_the_other_takes_over_within_the_ttl(
    fleet: Cluster, engines: list[EngineProcess], nats_server: Any, tmp_path: Path
) -> None:
    engines.append(EngineProcess(nats_server.url, "engine-a", tmp_path))
    engines.append(EngineProcess(nats_server.url, "engine-b", tmp_path))
    await fleet.apply(nodes_yaml(*NODES))
    await fleet.apply(ds("1"))
    v1 = fleet.state.daemonsets["default/agent"].template_hash
    await fleet.wait("v1 everywhere", lambda s: converged(s, v1), timeout=30)
    elections = await _elections(fleet)
    assert len(elections) == 1, "exactly one engine leads"
    leader = elections[0][1].holder
    decided_by = {d.leader for d in await _decisions(fleet)}
    assert decided_by == {leader}

    victim = next(e for e in engines if e.identity == leader)
    killed_at = datetime.now(UTC)
    victim.kill()
    deadline = time.monotonic() + LEASE_TTL + 5
    while time.monotonic() < deadline and len(await _elections(fleet)) < 2:
        await asyncio.sleep(0.05)
    elections = await _elections(fleet)
    assert len(elections) == 2
    took_over_at, second = elections[1]
    assert second.holder != leader
    takeover = (took_over_at - killed_at).total_seconds()
    assert takeover <= LEASE_TTL + 1.0, f"takeover took {takeover:.2f}s"

    await fleet.apply(ds("2"))
    v2 = fleet.state.daemonsets["default/agent"].template_hash
    await fleet.wait("the new leader rolls v2", lambda s: converged(s, v2), timeout=30)


async def test_a_deposed_leaders_late_decision_is_refused(nc: Any, streams: Any) -> None:
    store = JetStreamEventStore(nc)
    try:
        old, new = DecisionWriter(store, "old"), DecisionWriter(store, "new")
        await old.elect(1)
        decision = DecisionRecorded(
            namespace="default", name="agent", uid="u1", generation=1, now=datetime.now(UTC), state_seq=1,
            template_hash="h",
        )  # fmt: skip
        await old.append(decision)
        await new.elect(2)
        last = await store.last_seq()
        with pytest.raises(LeadershipLost):
            await old.append(decision)
        assert await store.last_seq() == last, "the refused decision must not be stored"
        assert await new.append(decision) == last + 1
    finally:
        await store.close()


async def test_a_redelivered_command_is_applied_once(fleet: Cluster, nc: Any) -> None:
    await fleet.apply(nodes_yaml("node1"))
    cmd = CreatePod(
        id="cmd-once", node="node1", namespace="default", pod_name="manual-abcde", pod_uid="uid-1",
        owner_uid="", owner_name="", revision_hash="h",
        template=PodTemplate(metadata=TemplateMetadata(labels={"app": "manual"})),
    )  # fmt: skip
    js = nc.jetstream()
    # two publishes with different message ids get past the server's dedupe: a true redelivery
    for msg_id in ("first", "second"):
        await js.publish(command_subject("node1"), codec.encode_command(cmd), headers={"Nats-Msg-Id": msg_id})
    await fleet.wait("the pod exists", lambda s: "default/manual-abcde" in s.pods)
    await asyncio.sleep(0.5)
    created = 0
    async with contextlib.aclosing(fleet.store.read(subjects=["dse.pod.node1.>"])) as events:
        async for stored in events:
            created += isinstance(stored.envelope.data, PodCreated)
    assert created == 1
