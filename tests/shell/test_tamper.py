"""Tamper evidence below the engine (docs/design.md, "Tamper evidence"): the store held to its stream,
the projector's gap check, the ordered reader on a vanished stream, the decision writer fencing over
records no engine wrote, and the leader lease taken back from a forger. The engine as a whole, attacked
as a client would attack it, is in ``tests/e2e/test_tamper.py``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.cli.queries import readable
from engine.cli.verify import verify
from engine.reconciler.fencing import DecisionWriter, LeadershipLost
from engine.store.event_store import JetStreamEventStore
from engine.store.jetstream_api import api_request
from engine.store.lease import LeaderLease
from engine.store.memory_store import MemoryEventStore
from engine.store.port import LogIntegrityError
from engine.store.projector import Projector
from engine.store.streams import EVENTS_STREAM, LEADER_BUCKET, apply_definitions
from events.envelope import wrap
from events.errors import ConflictError
from events.types import DecisionRecorded, LeaderElected, NodeRegistered
from projections.authority import decision_id

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def node(i: int) -> Any:
    return wrap(NodeRegistered(name=f"n{i}"), id=f"n{i}", occurred_at=NOW, source="test")


@pytest.fixture
async def deletable(nc: Any, streams: Any) -> AsyncIterator[JetStreamEventStore]:
    """DSE_EVENTS as it is defined, but letting messages be removed: what a stream someone replaced may be."""
    [events] = [d for d in streams if d.name == EVENTS_STREAM]
    await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
    config = {**events.stream_config(), "deny_delete": False, "deny_purge": False}
    await api_request(nc, f"STREAM.CREATE.{EVENTS_STREAM}", config)
    store = JetStreamEventStore(nc, heartbeat=0.5, stall_timeout=10)
    yield store
    await store.close()


async def delete_message(nc: Any, seq: int) -> None:
    await api_request(nc, f"STREAM.MSG.DELETE.{EVENTS_STREAM}", {"seq": seq, "no_erase": True})


async def test_a_gap_in_the_log_stops_the_projector_as_it_loads(
    deletable: JetStreamEventStore, nc: Any
) -> None:
    for i in range(1, 5):
        await deletable.append(node(i))
    await delete_message(nc, 2)
    projector = Projector(deletable)
    with pytest.raises(LogIntegrityError, match="the log holds 3 after 1") as caught:
        await projector.load()
    assert caught.value.kind == "sequence_gap" and "n3" not in projector.state.nodes


async def test_a_gap_in_the_log_stops_the_projector_as_it_follows(
    deletable: JetStreamEventStore, nc: Any
) -> None:
    for i in range(1, 3):
        await deletable.append(node(i))
    projector = Projector(deletable)
    await projector.load()
    for i in range(3, 5):
        await deletable.append(node(i))
    await delete_message(nc, 3)
    with pytest.raises(LogIntegrityError, match="sequence gap"):
        await asyncio.wait_for(projector.run(), timeout=10)
    assert projector.seq == 2 and "n4" not in projector.state.nodes


async def test_verify_fails_on_a_gap(deletable: JetStreamEventStore, nc: Any) -> None:
    for i in range(1, 5):
        await deletable.append(node(i))
    await delete_message(nc, 2)
    report = await verify(deletable)
    assert report.gaps == [(2, 2)] and report.failed


async def test_a_pinned_store_refuses_a_replaced_or_deleted_stream(
    jetstream_store: JetStreamEventStore, nc: Any, streams: Any
) -> None:
    await jetstream_store.append(node(1))
    pinned = await jetstream_store.pin()
    assert pinned.last_seq == 1 and await jetstream_store.last_seq() == 1
    events = [d for d in streams if d.name == EVENTS_STREAM]
    await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
    with pytest.raises(LogIntegrityError, match="is gone") as gone:
        await jetstream_store.last_seq()
    assert gone.value.kind == "stream_deleted"
    await apply_definitions(nc, events)
    for i in range(1, 4):
        await jetstream_store.append(node(i))  # appends are not checked: a reader never reads them
    with pytest.raises(LogIntegrityError, match="was replaced") as replaced:
        await jetstream_store.last_seq()
    assert replaced.value.kind == "stream_replaced"
    with pytest.raises(LogIntegrityError, match="was replaced"):
        async with contextlib.aclosing(jetstream_store.read()) as reading:
            async for _ in reading:
                pass
    with pytest.raises(LogIntegrityError, match="was replaced"):
        async with contextlib.aclosing(jetstream_store.follow(2)) as following:
            async for _ in following:
                pass


async def test_a_pinned_store_refuses_a_stream_that_lost_its_front(
    deletable: JetStreamEventStore, nc: Any
) -> None:
    for i in range(1, 4):
        await deletable.append(node(i))
    await deletable.pin()
    await api_request(nc, f"STREAM.PURGE.{EVENTS_STREAM}", {"keep": 1})
    with pytest.raises(LogIntegrityError, match="lost messages from its front") as caught:
        await deletable.identity()
    assert caught.value.kind == "first_seq_moved"


async def test_a_tail_whose_stream_is_deleted_raises_instead_of_waiting_forever(
    jetstream_store: JetStreamEventStore, nc: Any
) -> None:
    await jetstream_store.append(node(1))
    seen: list[int] = []

    async def tail() -> None:
        async with contextlib.aclosing(jetstream_store.follow(1)) as events:
            async for stored in events:
                seen.append(stored.seq)

    following = asyncio.ensure_future(tail())
    try:
        while not seen:
            await asyncio.sleep(0.02)
        await api_request(nc, f"STREAM.DELETE.{EVENTS_STREAM}")
        with pytest.raises(LogIntegrityError, match="deleted while it was being read") as caught:
            await asyncio.wait_for(following, timeout=15)
        assert caught.value.kind == "stream_deleted"
    finally:
        following.cancel()
        with contextlib.suppress(BaseException):
            await following


# --- the decision writer ------------------------------------------------------------------------------


def a_decision(state_seq: int = 0) -> DecisionRecorded:
    return DecisionRecorded(
        namespace="default", name="agent", uid="u1", generation=1, now=NOW, state_seq=state_seq,
        template_hash="h",
    )  # fmt: skip


class Guard:
    """The engine's lease check, as a test sets it: the revision held, or None (lost)."""

    def __init__(self, revision: int | None) -> None:
        self.revision = revision
        self.asked = 0

    async def __call__(self) -> int | None:
        self.asked += 1
        return self.revision


async def tree(store: MemoryEventStore) -> list[tuple[int, str, Any]]:
    return [(s.seq, s.envelope.source, s.envelope) async for s in readable(store, ["dse.decision.>"], [])]


async def test_the_writer_fences_over_garbage_and_a_forged_marker_while_it_holds_the_lease() -> None:
    store = MemoryEventStore()
    found: list[tuple[int, str]] = []
    guard = Guard(12)
    writer = DecisionWriter(
        store, "engine-a", guard=guard, on_tamper=lambda s, subj, why: found.append((s, why))
    )
    await writer.elect(10)
    first = await writer.append(a_decision())
    genuine_head = writer.head_id
    garbage = await store.append_raw("dse.decision.default.agent", b"{}", msg_id="g")
    forged = await store.append(
        wrap(LeaderElected(holder="mallory", epoch=99), id="fm", occurred_at=NOW, source="mallory")
    )
    seq = await writer.append(a_decision(1))
    assert guard.asked == 1
    assert [s for s, _ in found] == [garbage.seq, forged.seq]
    assert "does not decode" in found[0][1] and "'mallory'" in found[1][1]
    records = await tree(store)
    reaffirm = records[-2][2]
    assert isinstance(reaffirm.data, LeaderElected) and reaffirm.data == LeaderElected(
        holder="engine-a", epoch=12
    )
    assert reaffirm.causation_id == genuine_head  # disowning what came after the decision at `first`
    assert records[-1][0] == seq and records[-1][2].id == decision_id(a_decision(1), records[-2][0])
    assert first < garbage.seq < forged.seq < seq


async def test_the_writer_steps_down_for_another_engines_election() -> None:
    store = MemoryEventStore()
    writer = DecisionWriter(store, "engine-a", guard=Guard(None))
    await writer.elect(10)
    await DecisionWriter(store, "engine-b").elect(11)
    last = await store.last_seq()
    with pytest.raises(LeadershipLost):
        await writer.append(a_decision())
    assert await store.last_seq() == last


async def test_the_writer_takes_its_own_record_whose_ack_was_lost_as_its_head() -> None:
    store = MemoryEventStore()
    guard = Guard(10)
    writer = DecisionWriter(store, "engine-a", guard=guard)
    await writer.elect(10)
    assert writer.tree_seq is not None
    # what an append whose acknowledgement was lost leaves: the decision stored, the writer not told
    lost = wrap(
        a_decision(), id=decision_id(a_decision(), writer.tree_seq), occurred_at=NOW, source="engine-a"
    )
    writer._remember(lost.id)
    stored = await store.append(lost)
    seq = await writer.append(a_decision(5))
    assert guard.asked == 0, "nothing foreign: no lease check, no re-affirmation"
    assert [s for s, _, _ in await tree(store)] == [1, stored.seq, seq]


async def test_a_projector_skips_a_refused_decision_and_reports_it() -> None:
    store = MemoryEventStore()
    writer = DecisionWriter(store, "engine-a")
    await writer.elect(1)
    forged = await store.append(wrap(a_decision(), id="forged", occurred_at=NOW, source="mallory"))
    projector = Projector(store)
    reported: list[tuple[int, str]] = []
    projector.on_tamper(lambda s, subj, why: reported.append((s, why)))
    await projector.load()
    assert [s for s, _ in reported] == [forged.seq] and projector.state.authority.refused == 1
    assert projector.tampered[0][0] == forged.seq


# --- the leader lease ---------------------------------------------------------------------------------


async def test_a_lease_written_over_while_live_is_taken_back(nc: Any, streams: Any) -> None:
    kv = await nc.jetstream().key_value(LEADER_BUCKET)
    forged: list[str] = []
    lease = LeaderLease(kv, "engine-a", 5.0, verify_takeover=_never, on_forged=forged.append)
    assert await lease.try_acquire() is not None
    await kv.put("engine", b"mallory")
    await lease.renew()
    assert (await kv.get("engine")).value == b"engine-a" and lease.revision is not None
    assert forged and "'mallory'" in forged[0]
    # deleted over a live lease: taken back too
    await kv.delete("engine")
    await lease.renew()
    assert (await kv.get("engine")).value == b"engine-a"


async def test_a_lease_taken_by_an_engine_whose_marker_followed_is_lost(nc: Any, streams: Any) -> None:
    kv = await nc.jetstream().key_value(LEADER_BUCKET)

    async def took_over(holder: str, revision: int) -> bool:
        return holder == "engine-b"

    lease = LeaderLease(kv, "engine-a", 5.0, verify_takeover=took_over)
    assert await lease.try_acquire() is not None
    await kv.put("engine", b"engine-b")
    with pytest.raises(ConflictError, match="lease lost"):
        await lease.renew()
    assert (await kv.get("engine")).value == b"engine-b"


async def test_a_lease_that_may_have_expired_is_not_taken_back(nc: Any, streams: Any) -> None:
    kv = await nc.jetstream().key_value(LEADER_BUCKET)
    lease = LeaderLease(kv, "engine-a", 0.5, verify_takeover=_never)
    assert await lease.try_acquire() is not None
    await asyncio.sleep(0.5)  # past most of the TTL without a renewal: whoever holds it may rightly
    await kv.put("engine", b"engine-b")
    with pytest.raises(ConflictError):
        await lease.renew()


async def _never(holder: str, revision: int) -> bool:
    return False
