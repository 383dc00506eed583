"""Each role does its whole job under its permissions, and nothing else.

**Its job.** The real processes run, each connected as its own role: the engine leads, reconciles and
snapshots; node1's executor and a simulated fleet run pods and report them (the fleet reading the node
leases, an executor starting from a snapshot); the ingest service answers a publisher (and keeps a
refused event in ``DSE_REJECTED``), which also finds it through nats-micro discovery; the admin deletes a
pod as ``dsctl delete pod`` does; the auditor runs ``dsctl get``, ``describe``, ``explain``, ``audit``,
``rollout status|history`` and ``replay verify`` as processes, and reads the leases as ``ops/cluster
status`` does. The server refuses none of it: its log holds no violation.

**Nothing else.** Every subject another role may use and this one may not (the table in
``engine/security/roles.py``, wildcards filled in) is refused to it by the server, publish and
subscribe alike.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.cli.cluster.views import view_leases
from engine.cli.operations import request_pod_delete
from engine.executor.drivers.sim import SimDriver
from engine.executor.run import run_executor
from engine.ingest.client import IngestClient
from engine.ingest.service import serve_ingest
from engine.security.roles import Identity, permissions
from engine.store.jetstream_store import JetStreamEventStore
from events.envelope import wrap
from events.errors import DsctlError, InvalidInput
from events.types import NodeCordoned, NodeRegistered
from tests.security.conftest import (
    ADMIN,
    AUDITOR,
    EVERYONE,
    FLEET,
    INGEST,
    PUBLISHER,
    Bus,
    World,
)

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


async def test_every_process_does_its_job_under_its_own_role_and_is_refused_nothing(world: World) -> None:
    bus = world.bus
    assert world.engine.projector is not None
    # snapshots: a put, then another (nats-py purges the first one's chunks)
    assert await world.engine.projector.save_snapshot() > 0
    await _more_log(world)
    assert await world.engine.projector.save_snapshot() > 0

    # the ingest service, as its role, and a publisher using it (and finding it)
    ingest_nc = await bus.connect(INGEST)
    ingest_store = JetStreamEventStore(ingest_nc)
    ingest = await serve_ingest(ingest_nc, ingest_store)
    publisher = await bus.connect(PUBLISHER)
    try:
        ping = await publisher.request("$SRV.PING.dsctl-ingest", b"", timeout=2)
        assert b"dsctl-ingest" in ping.data
        reply = await IngestClient(publisher).publish(NodeRegistered(name="node2"), source="inventory")
        assert reply.seq > 0
        with pytest.raises(InvalidInput):
            await IngestClient(publisher, attempts=1).publish_raw(b'{"type": "node.registered", "data": {}}')
        rejected = await world.engine.nc.jetstream().stream_info("DSE_REJECTED")
        assert rejected.state.messages == 1

        # a simulated fleet (it starts from the snapshot, and leaves node1 to node1's executor)
        fleet_nc = await bus.connect(FLEET)
        ready = asyncio.Event()
        world.tasks.append(
            asyncio.ensure_future(
                run_executor(fleet_nc, SimDriver(ready_after=0.05), ready=ready, lease_wait=0)
            )
        )
        await world.until("the fleet", ready.is_set)
        await world.until("a ready pod on node2", lambda: (p := world.pod_on("node2")) and p.ready)

        # the admin deletes node1's pod (`dsctl delete pod`): node1's executor does it, the engine replaces it
        admin_nc = await bus.connect(ADMIN)
        old = world.pod_on("node1")
        await request_pod_delete(admin_nc, old)
        await world.until(
            "a new ready pod on node1",
            lambda: (p := world.pod_on("node1")) and p.name != old.name and p.ready,
        )

        # the auditor reads the leases as `ops/cluster status` does
        leases = await view_leases(await bus.connect(AUDITOR))
        assert leases.engine == "engine-under-test" and set(leases.executors) == {"node1", "_fleet"}, leases
        assert not leases.error
    finally:
        await ingest.stop()
        await ingest_store.close()
    await asyncio.sleep(0.3)
    assert bus.violations() == []


async def _more_log(world: World) -> None:
    """Some more log between the two snapshots (the admin labels node1)."""
    from engine.cli.apply import Applier

    await Applier(world.admin, source="security-tests").apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  labels: {zone: a}\n"
    )


def _dsctl(bus: Bus, role: Identity, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NATS_URL": bus.url,
        "DSCTL_CREDENTIALS": str(bus.creds.dir),
        "DSCTL_ROLE": role.name,
    }
    env.pop("DSCTL_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_the_auditor_reads_everything_with_the_cli_and_writes_nothing(world: World) -> None:
    reads = [
        ("get", "ds", "-A"),
        ("get", "pods", "-o", "wide"),
        ("get", "nodes", "--at", "3"),
        ("describe", "ds", "agent"),
        ("explain", "pod", world.pod_on("node1").name),
        ("explain", "node", "node1", "--ds", "default/agent"),
        ("audit", "--node", "node1", "-o", "jsonl"),
        ("rollout", "status", "ds/agent"),
        ("rollout", "history", "ds/agent"),
        ("replay", "verify"),
    ]
    for args in reads:
        r = await asyncio.to_thread(_dsctl, world.bus, AUDITOR, *args)
        assert r.returncode == 0, f"dsctl {' '.join(args)}: {r.stdout}\n{r.stderr}"
    assert "all match" in r.stdout
    assert world.bus.violations() == []
    # and it may not write: an append is refused by the bus (the CLI would retry it for 15 s, then say so)
    store = JetStreamEventStore(await world.bus.connect(AUDITOR), timeout=0.5)
    cordon = wrap(
        NodeCordoned(name="node1"), id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), source="auditor"
    )
    with pytest.raises(DsctlError):
        await store.append(cordon)
    await store.close()
    await world.bus.refused(AUDITOR, "dse.node.node1.cordoned")
    assert not world.state.nodes["node1"].unschedulable


# --- nothing else ---------------------------------------------------------------------------------


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def _concrete(pattern: str) -> str:
    return ".".join("x" if t in ("*", ">") else t for t in pattern.split("."))


def _others(me: Identity, kind: str) -> list[str]:
    """Subjects some other role may use (wildcards filled in) that ``me`` may not."""
    mine = getattr(permissions(me), kind)
    found: dict[str, None] = {}
    for other in EVERYONE:
        for pattern in getattr(permissions(other), kind):
            subject = _concrete(pattern)
            if subject != "x" and not any(_matches(m, subject) for m in mine):
                found[subject] = None
    return list(found)


@pytest.mark.parametrize("role", [r for r in EVERYONE if r is not ADMIN], ids=str)
async def test_a_role_is_refused_every_subject_of_another_role(bus: Bus, role: Identity) -> None:
    nc = await bus.connect(role)
    publish, subscribe = _others(role, "publish"), _others(role, "subscribe")
    assert publish and subscribe
    for subject in publish:
        await nc.publish(subject, b"{}")
    for subject in subscribe:
        await nc.subscribe(subject)
    await nc.flush()
    want = {("Publish", s) for s in publish} | {("Subscription", s) for s in subscribe}
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        got = {(v.kind, v.subject) for v in bus.violations() if v.who == role.name}
        if want <= got or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert want - got == set(), f"{role} was allowed what it must not: {sorted(want - got)}"
