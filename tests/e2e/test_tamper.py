"""Tamper evidence in the engine (docs/design.md, "Tamper evidence"): each attack done as a client with a
NATS connection would do it, against the in-process engine and fleet executor on a real nats-server;
the outcome checked in the world (pods, as the log and a fresh reader see them), in the engine's
leadership, in its error logs and metrics, and in ``replay verify``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import structlog
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from engine.cli.apply import Applier
from engine.cli.queries import load_state
from engine.cli.verify import print_verify, verify
from engine.reconciler.engine import Engine, prepare
from engine.store.event_store import JetStreamEventStore
from engine.store.jetstream_api import api_request
from engine.store.lease import LEASE_KEY
from engine.store.port import LogIntegrityError
from engine.store.streams import EVENTS_STREAM, LEADER_BUCKET, apply_definitions, load_definitions
from events.envelope import wrap
from events.subjects import LEADER_SUBJECT
from events.types import CreatePod, DecisionRecorded, DeletePod, LeaderElected, NodeRegistered
from projections.authority import decision_id
from tests.e2e.harness import Cluster, nodes_yaml, running_nodes

pytestmark = [pytest.mark.integration]

AGENT = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: c
        image: example/agent:1
"""


@pytest.fixture
async def cluster(nc: Any, streams: Any) -> AsyncIterator[Cluster]:
    c = await Cluster(nc).start()
    try:
        yield c
    finally:
        await c.stop()


async def settled(cluster: Cluster, nodes: list[str]) -> None:
    await cluster.wait(
        f"agent ready on {nodes}",
        lambda s: running_nodes(s, "agent") == nodes and not s.in_flight,
        timeout=20,
    )
    await asyncio.sleep(0.3)  # the last status decision folded too


async def running(cluster: Cluster, nodes: list[str]) -> None:
    await cluster.apply(nodes_yaml(*nodes))
    await cluster.apply(AGENT)
    await settled(cluster, nodes)


def engine_of(cluster: Cluster) -> Engine:
    assert cluster.engine is not None and cluster.engine.projector is not None
    return cluster.engine


async def pods_seen_by_a_reader(cluster: Cluster) -> set[str]:
    """The pods as ``dsctl get pods`` reads them: a fresh fold of the log."""
    return set((await load_state(cluster.store)).pods)


async def eventually(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def logged(logs: list[dict[str, Any]], event: str, level: str = "error") -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event and e["log_level"] == level]


async def still_serves(cluster: Cluster, nodes: list[str], new: str) -> None:
    """The engine still leads and acts: a node joining gets its pod."""
    await cluster.apply(nodes_yaml(new))
    await settled(cluster, sorted([*nodes, new]))


def agent_decision(cluster: Cluster, commands: tuple[Any, ...]) -> DecisionRecorded:
    state = cluster.state
    ds = state.daemonsets["default/agent"]
    return DecisionRecorded(
        namespace="default", name="agent", uid=ds.uid, generation=ds.generation, now=datetime.now(UTC),
        state_seq=state.seq, template_hash=ds.template_hash, commands=commands, status=ds.status,
    )  # fmt: skip


def forged_commands(cluster: Cluster, victim_node: str) -> tuple[Any, ...]:
    """Delete the agent pod on ``victim_node``; create a pod for a node that does not want one."""
    victim = next(p for p in cluster.state.pods.values() if p.node == victim_node)
    ds = cluster.state.daemonsets["default/agent"]
    delete = DeletePod(id="forged-delete", node=victim.node, namespace="default", pod_name=victim.name)
    create = CreatePod(
        id="forged-create", node=victim_node, namespace="default", pod_name="agent-forgd", pod_uid="forged",
        owner_uid=ds.uid, owner_name="agent", revision_hash=ds.template_hash,
    )  # fmt: skip
    return (delete, create)


async def test_a_forged_decision_is_refused_by_every_reader_and_never_carried_out(cluster: Cluster) -> None:
    await running(cluster, ["n1", "n2"])
    engine = engine_of(cluster)
    pods = set(cluster.state.pods)
    forged = agent_decision(cluster, forged_commands(cluster, "n1"))
    with structlog.testing.capture_logs() as logs:
        # well formed, appended straight to DSE_EVENTS as any client could, without the fence
        stored = await cluster.store.append(
            wrap(forged, id="forged-decision", occurred_at=datetime.now(UTC), source="mallory")
        )
        assert engine.projector is not None and await engine.projector.wait_for(stored.seq)
        await asyncio.sleep(0.7)  # time for a relay and an executor to act, had they
        assert set(cluster.state.pods) == pods and running_nodes(cluster.state, "agent") == ["n1", "n2"]
        assert await pods_seen_by_a_reader(cluster) == pods
        assert "forged-create" not in cluster.state.in_flight, "the fold took the forged decision"
        # the engine's projector, and the reader's: every fold refuses it, loudly
        tampers = logged(logs, "projector.tamper")
        assert {e["seq"] for e in tampers} == {stored.seq} and "'mallory'" in tampers[0]["why"]
        assert engine.metrics.tamper_records == 1 and engine.leading.is_set()
        await still_serves(cluster, ["n1", "n2"], "n3")

    report = await verify(cluster.store, nc=cluster.nc)
    assert [(f.seq, f.verdict, f.commands, f.relayed) for f in report.tampered] == [
        (stored.seq, "refused", 2, "no")
    ]
    assert report.mismatches == [] and not report.failed
    out = _printed(report)
    assert f"TAMPER seq {stored.seq} (dse.decision.default.agent)" in out
    assert "refused by the fold, 2 commands: no command relayed from it" in out


async def test_a_forged_decision_in_the_leaders_own_name_and_fence_is_not_sent_and_is_disowned(
    cluster: Cluster,
) -> None:
    """A forger who copies the leader's name and computes the fenced id as the writer does: every
    reader's fold takes it, but the leader knows it did not write it, sends none of it and fences over
    it, disowning it. (Its commands count as in flight until they expire, holding that DaemonSet back:
    the price of a fold that cannot tell; other work goes on.)"""
    await running(cluster, ["n1", "n2"])
    engine = engine_of(cluster)
    pods = set(cluster.state.pods)
    forged = msgspec.structs.replace(
        agent_decision(cluster, forged_commands(cluster, "n2")), leader=engine.identity
    )
    head = cluster.state.authority.head
    with structlog.testing.capture_logs() as logs:
        stored = await cluster.store.append(
            wrap(forged, id=decision_id(forged, head), occurred_at=datetime.now(UTC), source=engine.identity)
        )
        await eventually(
            "the leader to re-fence", lambda: bool(logged(logs, "fencing.reaffirmed", "warning"))
        )
        [refused] = logged(logs, "relay.foreign_decision")
        assert refused["seq"] == stored.seq and refused["verdict"] == "not sent"
        assert [e["seq"] for e in logged(logs, "fencing.tamper")] == [stored.seq]
        await asyncio.sleep(0.5)
        assert set(cluster.state.pods) == pods and await pods_seen_by_a_reader(cluster) == pods
        assert engine.leading.is_set() and cluster.state.authority.holder == engine.identity
        assert engine.metrics.tamper_records == 1
        # the engine still leads and acts
        await cluster.apply(AGENT.replace("agent", "logs"))
        await cluster.wait("logs on every node", lambda s: running_nodes(s, "logs") == ["n1", "n2"])
        assert set(cluster.state.pods) - pods == {p for p in cluster.state.pods if "/logs-" in p}

    report = await verify(cluster.store, nc=cluster.nc)
    assert [(f.seq, f.verdict, f.relayed) for f in report.tampered] == [(stored.seq, "disowned", "no")]
    assert report.mismatches == [] and not report.failed


async def test_a_new_leader_does_not_resend_a_disowned_decision(cluster: Cluster, nc: Any) -> None:
    await running(cluster, ["n1", "n2"])
    engine = engine_of(cluster)
    other, _ = await cluster.add_engine(nc, "engine-b")
    pods = set(cluster.state.pods)
    forged = msgspec.structs.replace(
        agent_decision(cluster, forged_commands(cluster, "n1")), leader=engine.identity
    )
    head = cluster.state.authority.head
    with structlog.testing.capture_logs() as logs:
        stored = await cluster.store.append(
            wrap(forged, id=decision_id(forged, head), occurred_at=datetime.now(UTC), source=engine.identity)
        )
        await eventually(
            "the leader to re-fence", lambda: bool(logged(logs, "fencing.reaffirmed", "warning"))
        )
        # the leader goes away (its lease given back) before it sends anything after the forgery
        leader_task = cluster._tasks[0]
        leader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader_task
        await eventually("engine-b to lead", other.leading.is_set, timeout=10)
        await eventually(
            "engine-b's relay to pass over the disowned decision",
            lambda: any(e["seq"] == stored.seq for e in logged(logs, "relay.disowned_not_resent")),
        )
        await asyncio.sleep(0.5)
        assert set(cluster.state.pods) == pods and await pods_seen_by_a_reader(cluster) == pods


async def test_garbage_on_a_decision_subject_is_reported_and_the_leader_fences_over_it(
    cluster: Cluster,
) -> None:
    await running(cluster, ["n1"])
    engine = engine_of(cluster)
    with structlog.testing.capture_logs() as logs:
        garbage = await cluster.store.append_raw(
            "dse.decision.default.agent", b'{"id": "x", "type": "decision.recorded"}', msg_id="garbage-1"
        )
        await eventually("the projector to report it", lambda: bool(logged(logs, "projector.tamper")))
        assert logged(logs, "projector.tamper")[0]["seq"] == garbage.seq
        # the garbage moved the fence; the next decision finds it, and the leader fences over it
        await still_serves(cluster, ["n1"], "n2")
        assert [e["seq"] for e in logged(logs, "fencing.tamper")] == [garbage.seq]
        assert not logged(logs, "controller.deposed", "warning") and engine.leading.is_set()
    assert engine.metrics.tamper_records == 1
    report = await verify(cluster.store, nc=cluster.nc)
    assert [(f.seq, f.verdict) for f in report.tampered] == [(garbage.seq, "malformed")]
    assert not report.failed and report.mismatches == []


async def test_a_forged_leader_marker_does_not_depose_the_leader(cluster: Cluster, nc: Any) -> None:
    await running(cluster, ["n1"])
    engine = engine_of(cluster)
    other, _ = await cluster.add_engine(nc, "engine-b")  # a real follower, waiting for the lease
    with structlog.testing.capture_logs() as logs:
        forged = await cluster.store.append(
            wrap(
                LeaderElected(holder="mallory", epoch=1_000_000),
                id="forged-marker",
                occurred_at=datetime.now(UTC),
                source="mallory",
            )
        )
        await eventually(
            "the leader to re-fence", lambda: bool(logged(logs, "fencing.reaffirmed", "warning"))
        )
        assert [e["seq"] for e in logged(logs, "fencing.tamper")] == [forged.seq]
        await eventually(
            "the marker back with the leader", lambda: cluster.state.authority.holder == "engine-a"
        )
        await still_serves(cluster, ["n1"], "n2")
        assert engine.leading.is_set() and not other.leading.is_set()
        assert not logged(logs, "engine.stepped_down", "warning")
    holders = []
    async with contextlib.aclosing(cluster.store.read(subjects=[LEADER_SUBJECT])) as events:
        async for stored in events:
            assert isinstance(stored.envelope.data, LeaderElected)
            holders.append(stored.envelope.data.holder)
    assert holders == ["engine-a", "mallory", "engine-a"]
    report = await verify(cluster.store, nc=cluster.nc)
    assert [(f.seq, f.verdict) for f in report.tampered] == [(forged.seq, "disowned")]
    assert not report.failed and report.mismatches == []


async def test_an_overwritten_lease_key_does_not_depose_the_leader(cluster: Cluster, nc: Any) -> None:
    await running(cluster, ["n1"])
    engine = engine_of(cluster)
    other, _ = await cluster.add_engine(nc, "engine-b")
    kv = await nc.jetstream().key_value(LEADER_BUCKET)
    with structlog.testing.capture_logs() as logs:
        await kv.put(LEASE_KEY, b"mallory")
        await eventually("the forgery to be noticed", lambda: bool(logged(logs, "lease.forged")))
        assert "'mallory'" in logged(logs, "lease.forged")[0]["written"]
        await eventually("the lease back", lambda: bool(logged(logs, "lease.reclaimed", "warning")))
        assert (await kv.get(LEASE_KEY)).value == b"engine-a"
        await asyncio.sleep(cluster.lease_ttl)  # a lost lease would have shown by now
        assert engine.leading.is_set() and not other.leading.is_set()
        assert not logged(logs, "lease.lost", "warning") and not logged(
            logs, "engine.stepped_down", "warning"
        )
        await still_serves(cluster, ["n1"], "n2")
    assert engine.metrics.tamper_records >= 1


async def test_the_event_stream_deleted_under_the_engine_stops_it_loudly_and_is_not_recreated(
    cluster: Cluster, nc: Any
) -> None:
    await running(cluster, ["n1"])
    engine = engine_of(cluster)
    with structlog.testing.capture_logs() as logs:
        await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
        await eventually("the engine to stop reconciling", lambda: engine.integrity is not None, timeout=15)
        assert engine.integrity is not None and engine.integrity.kind == "stream_deleted"
        assert engine.projector is not None and engine.projector.untrusted is engine.integrity
        [untrusted] = logged(logs, "engine.log_untrusted")
        assert untrusted["kind"] == "stream_deleted" and "gone" in untrusted["error"]
        await eventually("the leadership given up", lambda: not engine.leading.is_set())
        assert engine.metrics.log_integrity_failed == 1 and engine.metrics.is_leader == 0
        assert "dsctl_log_integrity_failed 1" in engine.metrics.render()
        await asyncio.sleep(1.0)
        # the engine never made a new stream over the deleted one
        with pytest.raises(Exception, match="stream not found"):
            await api_request(nc, f"STREAM.INFO.{EVENTS_STREAM}")
        # and when someone makes one and writes a world into it, the engine does nothing with it
        await apply_definitions(nc, [d for d in load_definitions() if d.name == EVENTS_STREAM])
        store = JetStreamEventStore(nc)  # a client of its own (the engine's store is held to the old one)
        try:
            await Applier(store, source="mallory").apply(nodes_yaml("n7"))
        finally:
            await store.close()
        await asyncio.sleep(1.0)
        assert "n7" not in cluster.state.nodes and not engine.leading.is_set()
    kv = await nc.jetstream().key_value(LEADER_BUCKET)
    try:
        held = (await kv.get(LEASE_KEY)).value
    except (KeyNotFoundError, KeyDeletedError):
        held = None
    assert not held, "the untrusting engine should give the lease up"


async def test_the_event_stream_replaced_under_the_engine_stops_it(cluster: Cluster, nc: Any) -> None:
    await running(cluster, ["n1"])
    engine = engine_of(cluster)
    pods = set(cluster.state.pods)
    events = [d for d in load_definitions() if d.name == EVENTS_STREAM]
    with structlog.testing.capture_logs() as logs:
        # a new stream under the old name, with a history of the forger's own: more events than before
        await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
        await apply_definitions(nc, events)
        store = JetStreamEventStore(nc)
        try:
            for i in range(cluster.state.seq + 5):
                await store.append(
                    wrap(NodeRegistered(name=f"x{i}"), id=f"x{i}", occurred_at=datetime.now(UTC), source="m")
                )
        finally:
            await store.close()
        await eventually("the engine to stop reconciling", lambda: engine.integrity is not None, timeout=15)
        assert engine.integrity is not None
        assert engine.integrity.kind in ("stream_replaced", "stream_deleted")
        assert logged(logs, "engine.log_untrusted")
        assert not any(name.startswith("x") for name in cluster.state.nodes), "folded the other stream"
        assert set(cluster.state.pods) == pods and not engine.leading.is_set()


async def test_an_engine_refuses_to_start_on_a_stream_shorter_than_its_snapshot(
    cluster: Cluster, nc: Any
) -> None:
    await running(cluster, ["n1"])
    assert await engine_of(cluster).projector.save_snapshot() > 0  # type: ignore[union-attr]
    await cluster.stop()
    await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
    await apply_definitions(nc, [d for d in load_definitions() if d.name == EVENTS_STREAM])
    store = JetStreamEventStore(nc)
    try:
        with pytest.raises(LogIntegrityError, match="snapshot covers the log up to") as caught:
            await Engine(nc, identity="engine-c", lease_ttl=2.0, store=store).start()
        assert caught.value.kind == "log_behind_snapshot"
    finally:
        await store.close()


async def test_an_engine_refuses_to_start_on_a_stream_that_is_not_its_snapshots(
    cluster: Cluster, nc: Any
) -> None:
    await running(cluster, ["n1"])
    covered = await engine_of(cluster).projector.save_snapshot()  # type: ignore[union-attr]
    await cluster.stop()
    await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
    await apply_definitions(nc, [d for d in load_definitions() if d.name == EVENTS_STREAM])
    store = JetStreamEventStore(nc)
    try:
        for i in range(covered + 3):  # as long as the old one, and longer: other records all the same
            await store.append(
                wrap(NodeRegistered(name=f"x{i}"), id=f"x{i}", occurred_at=datetime.now(UTC), source="m")
            )
        with pytest.raises(LogIntegrityError, match="the event stream was replaced") as caught:
            await Engine(nc, identity="engine-c", lease_ttl=2.0, store=store).start()
        assert caught.value.kind == "stream_replaced"
    finally:
        await store.close()


async def test_an_engine_refuses_to_start_on_a_stream_behind_the_commands_relayed_from_it(
    cluster: Cluster, nc: Any
) -> None:
    """No snapshot yet: the relay's position in DSE_COMMANDS is what remembers the old stream."""
    await running(cluster, ["n1", "n2"])
    await cluster.stop()
    await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
    await apply_definitions(nc, [d for d in load_definitions() if d.name == EVENTS_STREAM])
    store = JetStreamEventStore(nc)
    try:
        with pytest.raises(LogIntegrityError, match="DSE_COMMANDS holds commands relayed") as caught:
            await Engine(nc, identity="engine-c", lease_ttl=2.0, store=store).start(use_snapshot=False)
        assert caught.value.kind == "log_behind_commands"
    finally:
        await store.close()


async def test_start_up_set_up_refuses_to_create_the_event_stream_over_a_deleted_one(
    cluster: Cluster, nc: Any
) -> None:
    await running(cluster, ["n1"])
    await cluster.stop()
    await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
    with pytest.raises(LogIntegrityError, match="commands relayed from decision sequence") as caught:
        await prepare(nc, lease_ttl=2.0)
    assert caught.value.kind == "stream_deleted"
    with pytest.raises(Exception, match="stream not found"):
        await api_request(nc, f"STREAM.INFO.{EVENTS_STREAM}")


async def test_an_engine_restarted_on_its_own_log_starts_and_leads_without_complaint(
    cluster: Cluster, nc: Any
) -> None:
    """The start-up checks are not set off by the log they guard: snapshot, later events, relayed
    commands, a server-side stream untouched."""
    await running(cluster, ["n1", "n2"])
    assert await engine_of(cluster).projector.save_snapshot() > 0  # type: ignore[union-attr]
    await still_serves(cluster, ["n1", "n2"], "n3")
    pods = set(cluster.state.pods)
    await cluster.stop()
    again = await Cluster(nc, identity="engine-a2").start()
    try:
        await settled(again, ["n1", "n2", "n3"])
        assert set(again.state.pods) == pods
        engine = engine_of(again)
        assert engine.integrity is None and engine.metrics.tamper_records == 0
        assert engine.projector is not None and engine.projector.loaded_from_snapshot > 0
        await still_serves(again, ["n1", "n2", "n3"], "n4")
    finally:
        await again.stop()


def _printed(report: Any) -> str:
    import io

    out = io.StringIO()
    print_verify(report, out)
    return out.getvalue()
