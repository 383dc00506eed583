"""Where executors get their commands: batched direct gets on ``DSE_COMMANDS`` from a checkpoint, woken by
a plain subscription. No consumer on the server.

Why not a consumer per node: measured on a 3-node loopback cluster, 2,000 replicated durables cost
313-343 MB and a fifth of a core per server while idle, and 10,000 ephemeral pull consumers (R1, in
memory) still 235 MB per server; 10,000 plain subscriptions cost about 10 MB and nothing while idle
(docs/jetstream.md §7, docs/design.md). So:

- **Wake-up.** The relay publishes each command on ``dse.cmd.<node>``; the stream stores it, and a plain
  subscription on the same subject receives it like any subscriber. The feed uses that delivery only as a
  signal: it may arrive before the message is stored, or for a message that never will be (a publish the
  relay then retries), and it carries no stream sequence to keep order by.
- **Read.** The feed reads its subject from ``next`` on with batched direct gets and hands out each
  command in stream order with its sequence. A replica may answer before it has the newest message: when
  a wake-up named a message (its ``Nats-Msg-Id``) that the read did not return, the feed asks the stream
  leader (``STREAM.MSG.GET``, one message at a time) until it has it, for up to ``LAG_PATIENCE`` seconds.
  (Waiting for the replica instead, with a doubling pause, put the p99 of 5,000 creates at once near a
  second; most of it was the pause.)
- **Safety net.** With no wake-up, the feed still reads every ``poll_seconds`` (jittered), so a wake-up
  lost while disconnected costs at most one poll period. After nats-py reconnects, the executor's
  connection watch calls ``kick`` and the feed reads at once.
- **Checkpoint.** Settled commands (acked or refused) move a low-water mark: every command at or below it
  is settled. It is written to ``dse_executor_checkpoints`` at most every ``save_every`` seconds while it
  moves, and at a clean stop; the next executor for the node starts there. A command handed out but not
  settled when the process dies is read again: commands are idempotent by id, and the executor skips
  those the log shows answered (``Executor.recover``).
- **Retries.** ``nak(delay)`` hands the same command out again after ``delay``, for as long as the
  process lives (the executor logs each failure; the engine re-decides a command unanswered past its
  in-flight window).

An optional ``gate`` (the executor's node lease) pauses reading while it is clear: an executor that
cannot confirm it still holds its node must not take that node's commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from engine.executor.executor import Delivery
from engine.runtime.retry import Backoff
from engine.store.direct_get import DEFAULT_BATCH, DirectReader, RawMessage
from events import codec
from events.errors import DsctlError, MalformedEvent
from events.subjects import COMMAND_SUBJECTS, COMMANDS_STREAM, command_subject

log = structlog.get_logger("dsctl.commands")

#: the header the relay puts on each command: the sequence of the decision it comes from
DECISION_SEQ_HEADER = "Dsctl-Decision-Seq"
#: how long a message announced by a wake-up may take to show up in a read (a lagging replica)
LAG_PATIENCE = 5.0
#: how often to repeat a warning while reads keep failing
WARN_EVERY = 30.0


class CheckpointStore(Protocol):
    async def load(self, key: str) -> int: ...

    async def save(self, key: str, seq: int, holder: str) -> None: ...


def checkpoint_key(node: str | None) -> str:
    return "_fleet" if node is None else node


class CommandFeed:
    """A ``CommandSource`` for one node (or, ``node=None``, every node: a simulated fleet)."""

    def __init__(
        self,
        nc: Client,
        checkpoints: CheckpointStore,
        *,
        node: str | None = None,
        holder: str = "",
        stream: str = COMMANDS_STREAM,
        batch: int = DEFAULT_BATCH,
        poll_seconds: float = 60.0,
        save_every: float = 2.0,
        gate: asyncio.Event | None = None,
        observe: Callable[[Delivery], None] | None = None,
        reader: DirectReader | None = None,
    ) -> None:
        """``observe`` is told of each command when it is first handed out (the fan-out bench times
        delivery with it); ``reader`` is shared by the feeds on one connection (else one of its own)."""
        self._nc = nc
        self._own_reader = reader is None
        self._reader = reader or DirectReader(nc)
        self._observe = observe
        self._checkpoints = checkpoints
        self.node = node
        self.key = checkpoint_key(node)
        self.holder = holder
        self.stream = stream
        self.subject = COMMAND_SUBJECTS[0] if node is None else command_subject(node)
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.save_every = save_every
        self._gate = gate
        self._closed = False
        self._kick = asyncio.Event()
        #: message ids announced by a wake-up and not read yet -> when announced
        self._announced: dict[str, float] = {}
        self._retries: deque[Delivery] = deque()
        self._retry_handles: set[asyncio.TimerHandle] = set()
        #: the next stream sequence to read
        self.next_seq = 1
        #: every command at or below it is settled
        self.checkpoint = 0
        self._unsettled: set[int] = set()
        #: the same sequences in the (ascending) order they were handed out, settled ones dropped from
        #: the front lazily: the low-water mark without a ``min`` over every unsettled command per settle
        self._unsettled_order: deque[int] = deque()
        self._saved = 0
        self._save_task: asyncio.Task[None] | None = None
        self._save_handle: asyncio.TimerHandle | None = None
        #: reads answered since start (for the fan-out bench: proof the feed is live)
        self.reads = 0
        self.last_read_at = 0.0

    @property
    def allowed(self) -> bool:
        """Reading is allowed now (no gate, or the node's lease is confirmed)."""
        return self._gate is None or self._gate.is_set()

    # --- signals --------------------------------------------------------------------------------------

    async def _woken(self, msg: Msg) -> None:
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if msg_id:
            # the latest announcement counts: a publish retried after a timeout announces again
            self._announced[msg_id] = time.monotonic()
        self._kick.set()

    def kick(self) -> None:
        """Read now (after a reconnect: wake-ups may have been missed meanwhile)."""
        self._kick.set()

    # --- the loop -------------------------------------------------------------------------------------

    async def start_position(self) -> int:
        """Load the checkpoint (retried until NATS answers): the feed reads from the next sequence."""
        backoff = Backoff(initial=0.2, cap=5.0)
        attempt = 0
        while True:
            try:
                seq = await self._checkpoints.load(self.key)
                break
            except DsctlError as err:
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("commands.checkpoint_unreadable", key=self.key, error=str(err))
                await asyncio.sleep(backoff.delay(attempt))
        self.checkpoint = self._saved = seq
        self.next_seq = seq + 1
        return seq

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self.next_seq == 1 and self.checkpoint == 0:
            await self.start_position()
        sub = await self._nc.subscribe(self.subject, cb=self._woken)
        try:
            async for delivery in self._loop():
                yield delivery
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            for handle in self._retry_handles:
                handle.cancel()

    async def _loop(self) -> AsyncIterator[Delivery]:
        backoff = Backoff(initial=0.05, cap=5.0)
        failures = 0
        failing_since = 0.0
        warned_at = 0.0
        lag_attempt = 0
        while not self._closed:
            while self._retries:
                yield self._retries.popleft()
            if self._gate is not None and not self._gate.is_set():
                await _until(self._gate, 1.0)
                continue
            self._kick.clear()
            try:
                if lag_attempt:  # a replica did not have what a wake-up announced: ask the leader
                    batch = await self._reader.read_from_leader(self.stream, self.subject, self.next_seq)
                else:
                    batch = await self._reader.read_after(
                        self.stream, self.subject, self.next_seq, batch=self.batch
                    )
            except DsctlError as err:
                failures += 1
                now = time.monotonic()
                if failures == 1:
                    failing_since = now
                if now - warned_at >= WARN_EVERY:
                    warned_at = now
                    level = log.error if now - failing_since >= WARN_EVERY else log.warning
                    level(
                        "commands.read_failed",
                        subject=self.subject,
                        seq=self.next_seq,
                        failing_seconds=round(now - failing_since, 1),
                        error=str(err),
                    )
                await self._wait(backoff.delay(failures))
                continue
            if failures:
                log.info("commands.read_recovered", subject=self.subject, after=failures)
                failures = 0
                warned_at = 0.0
            self.reads += 1
            self.last_read_at = time.time()
            for raw in batch.messages:
                if raw.seq < self.next_seq:
                    continue
                self.next_seq = raw.seq + 1
                msg_id = raw.headers.get("Nats-Msg-Id")
                if msg_id:
                    self._announced.pop(msg_id, None)
                self._unsettled.add(raw.seq)
                self._unsettled_order.append(raw.seq)
                delivery = self._delivery(raw)
                if self._observe is not None:
                    self._observe(delivery)
                yield delivery
            if lag_attempt and batch.messages:
                # the leader had it: back to batched reads, which find what was stored after it (staying
                # with one message per request while wake-ups kept coming made every command of a
                # 50,000-pod burst a request of its own)
                lag_attempt = 0
                continue
            if batch.pending > 0 or len(batch.messages) >= self.batch:
                continue  # more are stored: read on at once
            if self._lagging():
                lag_attempt += 1
                if lag_attempt > 1:  # the leader has not stored it yet either: a publish in flight
                    await self._wait(min(0.02 * lag_attempt, 0.5))
                continue
            lag_attempt = 0
            if not self._kick.is_set():
                await self._wait(self.poll_seconds * random.uniform(0.8, 1.2))

    def _lagging(self) -> bool:
        """True while a wake-up announced a message the reads have not returned yet (within patience)."""
        if not self._announced:
            return False
        cutoff = time.monotonic() - LAG_PATIENCE
        for msg_id, at in list(self._announced.items()):
            if at < cutoff:
                del self._announced[msg_id]  # never stored (a publish the relay retries), or long read
        return bool(self._announced)

    async def _wait(self, seconds: float) -> None:
        await _until(self._kick, seconds)

    # --- settling -------------------------------------------------------------------------------------

    def _delivery(self, raw: RawMessage) -> Delivery:
        seq = raw.seq
        try:
            command = codec.decode_command(raw.data)
            error = ""
        except MalformedEvent as err:
            command, error = None, f"command at {raw.subject} (sequence {seq}): {err}"
        try:
            decision_seq = int(raw.headers.get(DECISION_SEQ_HEADER, "0"))
        except ValueError:
            decision_seq = 0
        delivery: Delivery

        async def settle() -> None:
            self._settled(seq)

        async def nak(delay: float) -> None:
            handle = asyncio.get_running_loop().call_later(delay, self._redeliver, delivery)
            self._retry_handles.add(handle)

        delivery = Delivery(
            command=command,
            ack=settle,
            term=settle,
            nak=nak,
            error=error,
            decision_seq=decision_seq,
            sent_at=raw.stored_at,
        )
        return delivery

    def _redeliver(self, delivery: Delivery) -> None:
        now = asyncio.get_running_loop().time()
        self._retry_handles = {h for h in self._retry_handles if h.when() > now}
        self._retries.append(msgspec.structs.replace(delivery, redelivered=True))
        self._kick.set()

    def _settled(self, seq: int) -> None:
        self._unsettled.discard(seq)
        order = self._unsettled_order
        while order and order[0] not in self._unsettled:
            order.popleft()
        low = (order[0] - 1) if order else self.next_seq - 1
        if low > self.checkpoint:
            self.checkpoint = low
            self._schedule_save()

    def _schedule_save(self) -> None:
        if self._save_handle is not None or self._closed:
            return
        self._save_handle = asyncio.get_running_loop().call_later(self.save_every, self._start_save)

    def _start_save(self) -> None:
        self._save_handle = None
        if self._save_task is not None and not self._save_task.done():
            self._schedule_save()
            return
        self._save_task = asyncio.ensure_future(self._save())
        self._save_task.add_done_callback(_read_exception)

    async def _save(self) -> None:
        seq = self.checkpoint
        if seq <= self._saved:
            return
        try:
            await self._checkpoints.save(self.key, seq, self.holder)
            self._saved = seq
        except DsctlError as err:
            log.warning("commands.checkpoint_not_saved", key=self.key, seq=seq, error=str(err))
            self._schedule_save()

    async def close(self) -> None:
        """Stop reading and write the checkpoint one last time (best effort: losing it costs a re-read)."""
        self._closed = True
        self._kick.set()
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self._save_task is not None and not self._save_task.done():
            with contextlib.suppress(Exception):
                await self._save_task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._save(), timeout=2.0)
        if self._own_reader:
            with contextlib.suppress(DsctlError):
                await self._reader.close()


async def _until(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. Not ``asyncio.wait_for``: on Python 3.11 it returns
    normally when a cancel arrives just after the event was set, so the feed's loop (which ends only
    when cancelled or closed) waited on for ever and the executor's stop hung
    (tests/shell/test_feed_cancel.py)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _read_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("commands.checkpoint_task_failed", error=repr(task.exception()))
