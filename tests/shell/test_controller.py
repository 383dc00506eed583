"""The controller's scheduling as a whole (the in-memory store, with the same semantics as the server's,
and a sink that keeps what the relay sent): what gets sent, and in which lane, under contention."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from engine.cli.apply import Applier
from engine.reconciler.controller import Controller, DecisionWriter
from engine.reconciler.relay import CommandRelay
from engine.store.memory_store import MemoryEventStore
from engine.store.projector import Projector
from events.types import AnyCommand, CreatePod, DecisionRecorded
from tests.e2e.harness import nodes_yaml
from tests.outage import until

DS = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: c
        image: example/{name}:1
"""


@dataclass
class ListSink:
    """Keeps what was sent, by decision; ``fail`` makes the next publishes raise (an outage)."""

    sent: list[tuple[int, AnyCommand]] = field(default_factory=list)
    fail: int = 0
    stored_position: int | None = None

    async def publish(self, batch: Sequence[tuple[int, AnyCommand]], *, relayed_from: int) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("no stream leader")
        assert relayed_from <= batch[0][0]  # the low-water mark: below it, everything was stored
        self.sent.extend(batch)

    async def position(self) -> int | None:
        return self.stored_position

    def creates_on(self, node: str) -> set[str]:
        return {c.owner_name for _, c in self.sent if isinstance(c, CreatePod) and c.node == node}


@dataclass
class Rig:
    store: MemoryEventStore
    projector: Projector
    sink: ListSink
    controller: Controller
    applier: Applier


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = MemoryEventStore()
    projector = Projector(store)
    await projector.load()
    sink = ListSink()
    relay = CommandRelay(projector, sink)
    controller = Controller(projector, DecisionWriter(store, "engine-t"), relay, workers=8)
    follower = asyncio.ensure_future(projector.run())
    try:
        yield Rig(store, projector, sink, controller, Applier(store, source="test"))
    finally:
        controller.step_down()
        controller.close()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def _applied(rig: Rig, text: str) -> None:
    await rig.applier.apply(text)
    assert await rig.projector.wait_for(await rig.store.last_seq(), timeout=5)


async def test_node_events_are_served_while_the_full_lane_is_busy(rig: Rig) -> None:
    # more DaemonSets due for a full reconcile than there are workers: once, each held a worker while
    # it waited its turn for the one-at-a-time full reconcile, and a joining node got nothing
    names = [f"agent-{i}" for i in range(12)]
    await _applied(rig, nodes_yaml("node-a", "node-b"))
    for name in names:
        await _applied(rig, DS.format(name=name))
    # a long full reconcile is running: the full lane's one worker is held on its first key
    free = asyncio.Event()
    full = rig.controller._full

    async def held(key: str) -> DecisionRecorded | None:
        await free.wait()
        return await full(key)

    rig.controller._full = held  # type: ignore[method-assign]
    lead = asyncio.ensure_future(rig.controller.lead(1))
    try:
        await asyncio.sleep(0.3)  # every key is queued and handed to the full lane
        assert rig.sink.sent == []
        await _applied(rig, nodes_yaml("node-new"))
        await until(
            "a pod of every DaemonSet sent to the new node while the full lane is busy",
            lambda: rig.sink.creates_on("node-new") == set(names),
        )
        assert rig.sink.creates_on("node-a") == set()  # the full reconciles have not run
        free.set()
        fulls_seen: set[str] = set()

        async def fulls() -> set[str]:
            async for e in rig.store.read(subjects=["dse.decision.*.*"]):
                d = e.envelope.data
                if isinstance(d, DecisionRecorded) and not d.scope:
                    fulls_seen.add(d.name)
            return fulls_seen

        deadline = time.monotonic() + 10
        while await fulls() != set(names):
            assert time.monotonic() < deadline, f"full reconciles after the lane freed: {sorted(fulls_seen)}"
            await asyncio.sleep(0.05)
    finally:
        free.set()
        rig.controller.step_down()
        await asyncio.wait_for(lead, 10)


async def test_every_recorded_command_is_sent_once_even_through_an_outage(rig: Rig) -> None:
    await _applied(rig, nodes_yaml("node-a", "node-b", "node-c"))
    rig.sink.fail = 3  # the first sends fail (an election): retried until stored, never given up
    lead = asyncio.ensure_future(rig.controller.lead(1))
    try:
        await _applied(rig, DS.format(name="agent"))
        await until("3 creates sent", lambda: len(rig.sink.sent) == 3)
        decisions = [e async for e in rig.store.read(subjects=["dse.decision.*.*"])]
        recorded = {c.id for e in decisions for c in getattr(e.envelope.data, "commands", ())}
        assert {c.id for _, c in rig.sink.sent} == recorded
        assert all(isinstance(c, CreatePod) and c.template is not None for _, c in rig.sink.sent)
        assert rig.controller.relay.sent == 3
    finally:
        rig.controller.step_down()
        await asyncio.wait_for(lead, 10)


async def test_a_new_leader_sends_what_a_crashed_one_recorded_but_never_sent(rig: Rig) -> None:
    # leader 1 records decisions whose commands never reach the sink (it crashes in between)
    await _applied(rig, nodes_yaml("node-a", "node-b"))
    rig.controller.relay._active = False  # what a crash between append and send looks like
    original_run = rig.controller.relay.run

    async def crashed() -> None:
        await asyncio.Event().wait()

    rig.controller.relay.run = crashed  # type: ignore[method-assign]
    first = asyncio.ensure_future(rig.controller.lead(1))
    await _applied(rig, DS.format(name="agent"))
    await until("the decision is recorded", lambda: bool(rig.projector.state.in_flight))
    rig.controller.step_down()
    await asyncio.wait_for(first, 10)
    assert rig.sink.sent == []
    # leader 2 (the same engine after a restart): its relay resumes from the stored position
    rig.controller.relay.run = original_run  # type: ignore[method-assign]
    second = asyncio.ensure_future(rig.controller.lead(2))
    try:
        await until("the in-flight creates are sent", lambda: len(rig.sink.sent) == 2)
        assert {c.node for _, c in rig.sink.sent} == {"node-a", "node-b"}
    finally:
        rig.controller.step_down()
        await asyncio.wait_for(second, 10)


async def test_batches_in_flight_together_carry_the_oldest_unacknowledged_decision(rig: Rig) -> None:
    # the relay does not wait for one batch's acks before sending the next; each message names the
    # first decision of the oldest batch still unacknowledged, which is where a new leader resumes
    release = asyncio.Event()
    calls: list[tuple[int, int]] = []  # (relayed_from, first decision of the batch)
    publish = rig.sink.publish

    async def slow_first(batch: Sequence[tuple[int, AnyCommand]], *, relayed_from: int) -> None:
        calls.append((relayed_from, batch[0][0]))
        if len(calls) == 1:
            await release.wait()  # the first batch's acks are slow
        await publish(batch, relayed_from=relayed_from)

    rig.sink.publish = slow_first  # type: ignore[method-assign]
    await _applied(rig, nodes_yaml("node-a"))
    lead = asyncio.ensure_future(rig.controller.lead(1))
    try:
        await _applied(rig, DS.format(name="agent"))
        await until("the first batch is on its way", lambda: len(calls) == 1)
        await _applied(rig, DS.format(name="other"))  # another DaemonSet: its own decision
        await until("a second batch goes out meanwhile", lambda: len(calls) == 2)
        first_decision = calls[0][1]
        assert calls[1] == (first_decision, calls[1][1]) and calls[1][1] > first_decision
        assert rig.controller.relay.position < first_decision  # nothing is known stored yet
        release.set()
        await until("both stored", lambda: rig.controller.relay.position == calls[1][1])
        assert {c.owner_name for _, c in rig.sink.sent if isinstance(c, CreatePod)} == {"agent", "other"}
    finally:
        release.set()
        rig.controller.step_down()
        await asyncio.wait_for(lead, 10)
