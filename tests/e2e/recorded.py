"""Logs built by hand for the forensics tests: nodes and a DaemonSet appended through the event store
with a clock the test chooses, then decisions computed by the real ``reconcile`` and appended as the
engine would, but with nothing sent to ``DSE_COMMANDS`` and no executor reporting. So a test can say
exactly which commands were recorded, when, and what became of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.cli.apply import Applier
from engine.cli.queries import load_state
from engine.core.reconcile import reconcile
from engine.store.event_store import EventStore
from events.codec import encode_command
from events.envelope import wrap
from events.subjects import command_subject
from events.types import AnyCommand, CreatePod, DecisionRecorded, NodeLabelsChanged, PodCreated
from tests.e2e.harness import nodes_yaml

#: a fixed past instant, so the log's own clock is far from the wall clock
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()

WEB = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: example/web:1
"""


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


async def setup(store: EventStore, *nodes: str, t: float = T0) -> None:
    """Nodes and the ``default/web`` DaemonSet, applied at ``t``."""
    applier = Applier(store, source="test", clock=lambda: t)
    await applier.apply(nodes_yaml(*nodes))
    await applier.apply(WEB)


async def record_decision(
    store: EventStore, t: float, key: str = "default/web"
) -> tuple[int, DecisionRecorded]:
    """The decision the real reconciler takes on the log as it stands, at ``t``, appended (the way the
    engine appends it: ``occurred_at`` is its clock); nothing is sent."""
    state = await load_state(store)
    result = reconcile(state, key, t)
    assert result.decision is not None, "nothing was due"
    decision = msgspec.structs.replace(result.decision, leader="engine-test")
    stored = await store.append(
        wrap(decision, id=f"decision-{state.seq}", occurred_at=at(t), source="engine")
    )
    return stored.seq, decision


async def later_event(store: EventStore, t: float, node: str = "n1") -> int:
    """Some unrelated later fact, so the log's end moves to ``t``."""
    event = NodeLabelsChanged(name=node, labels={"touched": str(int(t))})
    stored = await store.append(wrap(event, id=f"touch-{node}-{t}", occurred_at=at(t), source="test"))
    return stored.seq


async def answer(store: EventStore, cmd: CreatePod, t: float) -> int:
    """The report an executor sends when it created the pod of ``cmd`` (carrying its command id)."""
    event = PodCreated(
        namespace=cmd.namespace,
        name=cmd.pod_name,
        node=cmd.node,
        uid=cmd.pod_uid,
        owner_uid=cmd.owner_uid,
        owner_name=cmd.owner_name,
        revision_hash=cmd.revision_hash,
        command_id=cmd.id,
    )
    stored = await store.append(wrap(event, id=f"created-{cmd.id}", occurred_at=at(t), source="executor"))
    return stored.seq


async def send(nc: Any, cmd: AnyCommand, decision_seq: int) -> None:
    """Publish ``cmd`` to ``DSE_COMMANDS`` the way the command relay does."""
    await nc.jetstream().publish(
        command_subject(cmd.node),
        encode_command(cmd),
        headers={"Nats-Msg-Id": cmd.id, "Dsctl-Decision-Seq": str(decision_seq)},
    )
