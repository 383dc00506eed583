"""The command feed against a real nats-server: batched direct gets from a checkpoint, woken by a plain
subscription, no consumer on the server (engine/executor/command_feed.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.executor.command_feed import CommandFeed
from engine.executor.executor import Delivery
from engine.store.checkpoints import KvCheckpoints
from engine.store.direct_get import DirectBatch, DirectReader, read_after
from engine.store.jetstream_api import api_request
from events import codec
from events.errors import TransientError
from events.subjects import COMMANDS_STREAM, command_subject
from events.types import DeletePod

pytestmark = pytest.mark.integration


def _delete(i: int, node: str = "node-a") -> DeletePod:
    return DeletePod(id=f"cmd-{i}", node=node, namespace="default", pod_name=f"pod-{i}", reason="test")


async def _publish(nc: Any, cmd: DeletePod, decision_seq: int = 1) -> int:
    ack = await nc.jetstream().publish(
        command_subject(cmd.node),
        codec.encode_command(cmd),
        headers={"Nats-Msg-Id": cmd.id, "Dsctl-Decision-Seq": str(decision_seq)},
    )
    return int(ack.seq)


@contextlib.asynccontextmanager
async def _reading(feed: CommandFeed) -> AsyncIterator[asyncio.Queue[Delivery]]:
    """Run the feed into a queue until the block ends."""
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def pump() -> None:
        async for delivery in feed.deliveries():
            got.put_nowait(delivery)

    task = asyncio.ensure_future(pump())
    try:
        yield got
    finally:
        await feed.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _take(got: asyncio.Queue[Delivery], n: int, timeout: float = 10.0) -> list[Delivery]:
    return [await asyncio.wait_for(got.get(), timeout) for _ in range(n)]


async def _checkpoints(nc: Any) -> KvCheckpoints:
    return await KvCheckpoints.open(nc.jetstream())


async def test_direct_reads_return_one_subject_in_order_with_what_is_left(nc: Any, streams: Any) -> None:
    seqs = [await _publish(nc, _delete(i, "node-a" if i % 2 else "node-b")) for i in range(1, 8)]
    batch = await read_after(nc, COMMANDS_STREAM, command_subject("node-a"), 1, batch=2)
    assert [m.seq for m in batch.messages] == [seqs[0], seqs[2]]
    assert batch.pending == 2
    assert [codec.decode_command(m.data).id for m in batch.messages] == ["cmd-1", "cmd-3"]
    assert batch.messages[0].headers["Dsctl-Decision-Seq"] == "1" and batch.messages[0].stored_at
    rest = await read_after(nc, COMMANDS_STREAM, command_subject("node-a"), seqs[2] + 1)
    assert [m.seq for m in rest.messages] == [seqs[4], seqs[6]] and rest.pending == 0
    assert (await read_after(nc, COMMANDS_STREAM, command_subject("node-z"), 1)).messages == []
    with pytest.raises(TransientError, match="no responders"):
        await read_after(nc, "NO_SUCH_STREAM", "x.>", 1)


async def test_the_leader_read_returns_one_message_with_its_headers(nc: Any, streams: Any) -> None:
    reader = DirectReader(nc)
    try:
        seqs = [
            await _publish(nc, _delete(i, "node-a" if i % 2 else "node-b"), decision_seq=7)
            for i in range(1, 4)
        ]
        got = await reader.read_from_leader(COMMANDS_STREAM, command_subject("node-a"), seqs[0] + 1)
        assert [m.seq for m in got.messages] == [seqs[2]]
        (msg,) = got.messages
        assert msg.headers["Nats-Msg-Id"] == "cmd-3" and msg.headers["Dsctl-Decision-Seq"] == "7"
        assert codec.decode_command(msg.data).id == "cmd-3" and msg.stored_at
        none = await reader.read_from_leader(COMMANDS_STREAM, command_subject("node-a"), seqs[2] + 1)
        assert none.messages == [] and none.pending == 0
    finally:
        await reader.close()


async def test_a_node_gets_its_commands_and_the_next_feed_starts_at_its_checkpoint(
    nc: Any, streams: Any
) -> None:
    checkpoints = await _checkpoints(nc)
    for i in range(1, 4):
        await _publish(nc, _delete(i))
    await _publish(nc, _delete(99, "node-b"))
    feed = CommandFeed(nc, checkpoints, node="node-a", save_every=0.05)
    async with _reading(feed) as got:
        first = await _take(got, 3)
        assert [d.command.id for d in first if d.command] == ["cmd-1", "cmd-2", "cmd-3"]
        for d in first:
            await d.ack()
        later = await _publish(nc, _delete(4))
        fourth = (await _take(got, 1))[0]  # woken: the poll period is 60 s
        assert fourth.command is not None and fourth.command.id == "cmd-4"
        await fourth.ack()
    assert await checkpoints.load("node-a") == later
    again = CommandFeed(nc, checkpoints, node="node-a")
    assert await again.start_position() == later
    await _publish(nc, _delete(5))
    async with _reading(again) as got:
        fifth = (await _take(got, 1))[0]
        assert fifth.command is not None and fifth.command.id == "cmd-5"
        await asyncio.sleep(0.3)
        assert got.empty()  # nothing before the checkpoint is read again


async def test_an_unsettled_command_is_read_again_by_the_next_feed(nc: Any, streams: Any) -> None:
    checkpoints = await _checkpoints(nc)
    seqs = [await _publish(nc, _delete(i)) for i in range(1, 4)]
    feed = CommandFeed(nc, checkpoints, node="node-a", save_every=0.05)
    async with _reading(feed) as got:
        one, _unsettled, three = await _take(got, 3)
        await one.ack()
        await three.ack()  # the second is still being carried out when the process dies
        await asyncio.sleep(0.2)
    assert await checkpoints.load("node-a") == seqs[0]
    again = CommandFeed(nc, checkpoints, node="node-a")
    async with _reading(again) as got:
        assert [d.command.id for d in await _take(got, 2) if d.command] == ["cmd-2", "cmd-3"]


async def test_a_nak_hands_the_command_out_again_and_a_closed_gate_reads_nothing(
    nc: Any, streams: Any
) -> None:
    checkpoints = await _checkpoints(nc)
    gate = asyncio.Event()
    await _publish(nc, _delete(1))
    feed = CommandFeed(nc, checkpoints, node="node-a", gate=gate)
    async with _reading(feed) as got:
        await asyncio.sleep(0.5)
        assert got.empty() and feed.reads == 0  # no lease confirmed: no command taken
        gate.set()
        first = (await _take(got, 1))[0]
        assert not first.redelivered
        await first.nak(0.1)
        retried = (await _take(got, 1))[0]
        assert retried.redelivered and retried.command == first.command
        await retried.ack()


async def test_no_consumer_is_left_on_the_server(nc: Any, streams: Any) -> None:
    checkpoints = await _checkpoints(nc)
    await _publish(nc, _delete(1))
    feeds = [CommandFeed(nc, checkpoints, node=f"node-{c}") for c in "abc"]
    async with contextlib.AsyncExitStack() as stack:
        for feed in feeds:
            await stack.enter_async_context(_reading(feed))
        await asyncio.sleep(0.3)
        info = await api_request(nc, f"STREAM.INFO.{COMMANDS_STREAM}")
        assert info["state"].get("consumer_count", 0) == 0
        assert all(f.reads >= 1 for f in feeds)


class _LaggingReplica(DirectReader):
    """A reader whose first batched read misses everything (a replica behind the leader), counting the
    leader reads that follow."""

    def __init__(self, nc: Any) -> None:
        super().__init__(nc)
        self.behind = True
        self.leader_reads = 0

    async def read_after(self, stream: str, subject: str, seq: int, **kw: Any) -> DirectBatch:
        if self.behind:
            self.behind = False
            return DirectBatch(messages=[], pending=0)
        return await super().read_after(stream, subject, seq, **kw)

    async def read_from_leader(self, stream: str, subject: str, seq: int, **kw: Any) -> DirectBatch:
        self.leader_reads += 1
        return await super().read_from_leader(stream, subject, seq, **kw)


async def test_after_a_lagging_read_the_feed_goes_back_to_batched_reads(nc: Any, streams: Any) -> None:
    """One leader read gets past a lagging replica; the rest of a burst comes in batches, not one
    request per command (every command of a 50,000-pod burst once took a leader read of its own)."""
    checkpoints = await _checkpoints(nc)
    gate = asyncio.Event()
    reader = _LaggingReplica(nc)
    feed = CommandFeed(nc, checkpoints, node="node-a", gate=gate, reader=reader)
    count = 200
    try:
        async with _reading(feed) as got:
            async with asyncio.timeout(10):  # the wake-up subscription is there
                while not any(s.subject == feed.subject for s in nc._subs.values()):
                    await asyncio.sleep(0.01)
            seqs = [await _publish(nc, _delete(i)) for i in range(1, count + 1)]
            # every command announced by its wake-up while the gate kept the feed from reading
            async with asyncio.timeout(10):
                while len(feed._announced) < count:
                    await asyncio.sleep(0.01)
            gate.set()
            delivered = await _take(got, count)
            assert [d.command.id for d in delivered if d.command] == [f"cmd-{i}" for i in range(1, count + 1)]
            assert feed.next_seq == seqs[-1] + 1
            assert reader.leader_reads == 1
    finally:
        await reader.close()
