"""The command relay: sending commands is a projection of the recorded decisions.

    log ──► Projector.fold ──► DecisionRecorded at seq S ──► relay queue ──► DSE_COMMANDS
                                                                        (Nats-Msg-Id = command id,
                                                                         Dsctl-Decision-Seq = S)

Why a relay rather than "append the decision, then publish its commands" in the controller: with two
steps, any failure between them (a crash, a lost connection, a leader election, a code path that
returned the decision without its commands) leaves a decision whose commands were never sent, and
only a 5-minute expiry noticed. Here the commands sent are derived from the recorded decision alone
(``engine.core.dispatch``), after it is in the log, so "recorded => sent" holds by construction:

- **Live.** While this engine leads, every decision the projection folds is relayed, in log order,
  one decision at a time; a publish that fails is retried with backoff until it is stored (never given
  up while the process lives; a failure lasting more than ``REPORT_AFTER`` seconds is logged at error
  level and shown by the ``dsctl_relay_failing_seconds`` gauge).
- **Batched.** What is queued when the relay wakes (up to ``MAX_BATCH`` commands, several decisions)
  goes out at once and is acknowledged together: a node joining a fleet of ten DaemonSets makes ten
  decisions, and sending them one round trip after another measured 10x slower at 5,000 nodes.
- **Resume.** The relay's position is kept where its output is: each command message carries the
  sequence of its decision (header ``Dsctl-Decision-Seq``) and the relay's low-water mark (header
  ``Dsctl-Relayed-From``: the first decision of its batch; every decision before it is wholly stored).
  Batches go out one after another, so the last message in ``DSE_COMMANDS`` names a mark below which
  everything was sent, whatever order the messages of its own batch were stored in. A new leader (or a
  restarted one) re-sends the commands still in flight whose decision is at or after that mark, then
  follows the fold. There is no separate re-publish path.
- **Idempotent.** The command id is the ``Nats-Msg-Id`` (the server drops a repeat inside the
  duplicate window) and executors apply each command id once, so sending twice is harmless and
  sending once more than needed is the price of never sending zero times.
- **Only the leader's own decisions** (docs/design.md, "Tamper evidence"). The fold never folds a
  decision the current leader did not fence (``projections.authority``), so those never reach the relay.
  While this engine leads, a decision folded that its own writer did not write (a forger who copied the
  leader's name and fence) is not sent either: logged at error level, counted, and handed to
  ``on_foreign`` (the controller re-fences, which disowns it). On resume, decisions a later leader
  marker disowned are not re-sent.
- Commands whose in-flight window has expired are not re-sent on resume: the core has stopped waiting
  for them and decides afresh for their nodes (upstream's expectations timeout), so a late copy could
  only duplicate work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.core.dispatch import commands_to_send
from engine.core.expectations import is_live
from engine.runtime import tasks
from engine.runtime.metrics import Metrics
from engine.runtime.retry import Backoff
from engine.store.event_store import EventStore, MalformedStoredEvent, StoredEvent
from engine.store.jetstream_api import ApiError, api_request, error_for, stream_info, translate_errors
from engine.store.projector import Projector
from events import codec
from events.errors import NotFound, TransientError
from events.subjects import COMMANDS_STREAM, DECISION_TREE, command_subject
from events.types import AnyCommand, DecisionRecorded, LeaderElected
from projections.model import ClusterState

log = structlog.get_logger("dsctl.relay")


#: the header naming the stream sequence of the decision a command message belongs to
DECISION_SEQ_HEADER = "Dsctl-Decision-Seq"
#: the header naming the relay's low-water mark when the message was sent (its position on resume)
RELAYED_FROM_HEADER = "Dsctl-Relayed-From"
#: most commands sent in one batch (several decisions); one decision is never split
MAX_BATCH = 4096
#: most batches awaiting their acknowledgements at once
PIPELINE = 4
#: a run of failures longer than this is logged at error level (a person should look)
REPORT_AFTER = 30.0
#: how many refused decision sequences a relay keeps (for tests and a person at a debugger)
KEEP_REFUSED = 1000
#: most command messages looked at, from the end of the stream, for the relay's position (messages
#: without the header, such as a user's ``delete pod``, are passed over)
POSITION_SCAN = 1000


class Author(Protocol):
    """Who writes this engine's decisions (``fencing.DecisionWriter``), as the relay asks it."""

    holder: str

    def wrote(self, envelope_id: str) -> bool: ...


class CommandSink(Protocol):
    """Where commands go: ``DSE_COMMANDS`` in production, a list in the scheduler's tests."""

    async def publish(self, batch: Sequence[tuple[int, AnyCommand]], *, relayed_from: int) -> None:
        """Store every (decision seq, command) of ``batch`` (all or raise; a retry of the whole batch
        is safe); ``relayed_from``: every decision before it is wholly stored already."""
        ...

    async def position(self) -> int | None:
        """The low-water mark of the last relayed command stored, or None if there is none."""
        ...


class _PubAck(msgspec.Struct, frozen=True):
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_ack = msgspec.json.Decoder(_PubAck)


class JetStreamCommandSink:
    """Publishes a batch with up to ``concurrency`` acknowledgements outstanding, all answered on one
    reply subscription (as the event store's ``append_many``). A request per command (nats-py's
    ``request``: a task, a timer and an inbox token for every command) was most of the relay's cost.
    nats-py's ``publish_async`` is not used: its futures never resolve on an error ack."""

    def __init__(
        self, nc: Client, *, stream: str = COMMANDS_STREAM, timeout: float = 5.0, concurrency: int = 512
    ) -> None:
        self._nc = nc
        self.stream = stream
        self._timeout = timeout
        self._window = concurrency
        self._acks: dict[str, asyncio.Future[Msg]] = {}
        self._ack_sub: Subscription | None = None
        self._ack_prefix = ""
        self._counter = 0

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.pop(msg.subject[len(self._ack_prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, batch: Sequence[tuple[int, AnyCommand]], *, relayed_from: int) -> None:
        if self._ack_sub is None:
            with translate_errors("subscribe to the command acknowledgements"):
                prefix = self._nc.new_inbox() + "."
                self._ack_sub = await self._nc.subscribe(prefix + "*", cb=self._on_ack)
                self._ack_prefix = prefix
        loop = asyncio.get_running_loop()
        window: deque[tuple[str, str, float, asyncio.Future[Msg]]] = deque()
        try:
            for decision_seq, command in batch:
                if len(window) >= self._window:
                    await self._settle(window.popleft())
                subject = command_subject(command.node)
                context = f"send {type(command).__name__} {command.id} to {subject}"
                self._counter += 1
                token = str(self._counter)
                future: asyncio.Future[Msg] = loop.create_future()
                self._acks[token] = future
                window.append((token, context, loop.time() + self._timeout, future))
                headers = {
                    "Nats-Msg-Id": command.id,
                    DECISION_SEQ_HEADER: str(decision_seq),
                    RELAYED_FROM_HEADER: str(relayed_from),
                }
                with translate_errors(context):
                    await self._nc.publish(
                        subject,
                        codec.encode_command(command),
                        reply=self._ack_prefix + token,
                        headers=headers,
                    )
            while window:
                await self._settle(window.popleft())
        finally:
            for token, _, _, future in window:
                self._acks.pop(token, None)
                future.cancel()

    async def _settle(self, pending: tuple[str, str, float, asyncio.Future[Msg]]) -> None:
        token, context, deadline, future = pending
        try:
            async with asyncio.timeout_at(deadline):
                msg = await future
        except TimeoutError:
            self._acks.pop(token, None)
            raise TransientError(f"{context}: no acknowledgement within {self._timeout:g}s") from None
        if msg.headers and msg.headers.get("Status") == "503":
            raise TransientError(f"{context}: no responders (is the stream {self.stream} there?)")
        try:
            ack = _ack.decode(msg.data)
        except msgspec.DecodeError as err:
            raise TransientError(f"{context}: unreadable ack {msg.data[:200]!r}") from err
        if ack.error is not None:
            raise error_for(context, ack.error)

    async def position(self) -> int | None:
        state = (await stream_info(self._nc, self.stream, timeout=self._timeout)).state
        first, last = state.first_seq, state.last_seq
        for seq in range(last, max(first, last - POSITION_SCAN + 1) - 1, -1):
            if seq <= 0:
                break
            try:
                got = await api_request(
                    self._nc, f"STREAM.MSG.GET.{self.stream}", {"seq": seq}, timeout=self._timeout
                )
            except NotFound:
                continue  # deleted or aged out meanwhile
            header = _header(got.get("message", {}).get("hdrs"), RELAYED_FROM_HEADER)
            if header is not None:
                return int(header)
        return None


def _header(encoded: object, name: str) -> str | None:
    """One header of a message fetched with STREAM.MSG.GET (headers arrive base64, NATS/1.0 form)."""
    if not isinstance(encoded, str):
        return None
    text = base64.b64decode(encoded).decode(errors="replace")
    for line in text.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


Clock = Callable[[], float]
T = TypeVar("T")


class CommandRelay:
    """Relays the commands of every decision the projection folds while this engine leads."""

    def __init__(
        self,
        projector: Projector,
        sink: CommandSink,
        *,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.projector = projector
        self.sink = sink
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.backoff = backoff or Backoff(initial=0.1, cap=5.0)
        self._attempts = 0
        self._failing_since: float | None = None
        self._queue: deque[tuple[int, tuple[AnyCommand, ...]]] = deque()
        self._wake = asyncio.Event()
        #: set while nothing folded waits to be sent (full reconciles let sending go first)
        self.drained = asyncio.Event()
        self.drained.set()
        #: the highest decision sequence queued this run (offers at or below it are repeats)
        self._offered = 0
        #: when each queued decision was offered (perf_counter), for ``dsctl_relay_seconds``
        self._offered_at: dict[int, float] = {}
        #: set (and cleared by waiters) whenever the position moves
        self._moved = asyncio.Event()
        self._active = False
        self.sent = 0
        #: the sequence of the last decision whose commands are all stored (0: none yet this run)
        self.position = 0
        #: this engine's decision writer: while leading, only what it wrote is sent
        self.author: Author | None = None
        #: told of a decision folded under this engine's name that its writer did not write
        self.on_foreign: Callable[[int, str, str], None] | None = None
        #: decisions refused for that, and decisions not re-sent on resume because they were disowned
        self.refused: list[int] = []
        projector.listen(_nothing, self._after)

    def _refuse(self, seq: int) -> None:
        self.refused.append(seq)
        del self.refused[:-KEEP_REFUSED]

    @property
    def pending(self) -> int:
        """Decisions folded whose commands are not stored yet."""
        return len(self._queue)

    def _after(self, state: ClusterState, stored: StoredEvent, ctx: object) -> None:
        decision = stored.envelope.data
        if not isinstance(decision, DecisionRecorded) or state.authority.head != stored.seq:
            return  # not a decision, or one the fold did not take
        author = self.author
        if self._active and author is not None and stored.seq > self._offered:
            if state.authority.holder != author.holder:
                return  # another engine's term has begun: its relay sends its decisions
            if not author.wrote(stored.envelope.id):
                why = (
                    f"a decision for {decision.namespace}/{decision.name} under this engine's name "
                    f"({author.holder}) that this engine did not write"
                )
                log.error("relay.foreign_decision", seq=stored.seq, subject=stored.subject, why=why,
                          commands=len(decision.commands), verdict="not sent")  # fmt: skip
                self._refuse(stored.seq)
                if self.on_foreign is not None:
                    self.on_foreign(stored.seq, stored.subject, why)
                return
        self.offer(state, stored.seq, decision)

    def offer(self, state: ClusterState, seq: int, decision: DecisionRecorded) -> None:
        """Queue a recorded decision's commands (once per sequence, in log order).

        Two callers: the fold (every decision in the log, the guarantee) and this engine's decision
        writer the moment its append is acknowledged (a fast path: the fold would add a read of the
        log before the commands go). The writer appends one decision at a time, in log order, and a
        decision the writer offered is skipped when the fold brings it, so order and uniqueness hold.
        """
        if not self._active or seq <= self._offered or not decision.commands:
            return
        self._offered = seq
        self._offered_at[seq] = time.perf_counter()
        # made whole now, from a state that holds the decision's revision
        self._queue.append((seq, commands_to_send(state, decision)))
        self.drained.clear()
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled: catch up from the stored position, then follow the fold."""
        # synchronous with the fold (no await in between): every decision folded from here on is
        # queued, every one folded before is covered by the catch-up
        self._active = True
        self._queue.clear()
        self._offered_at.clear()
        self.position = 0
        # everything folded so far is the catch-up's; from here on, each decision is queued once
        self._offered = self.projector.state.seq
        behind = self._in_flight_by_decision(self.projector.state)
        try:
            start = await self._retry("read the relay position", self.sink.position)
            await self._catch_up(behind, start)
            await self._pump()
        finally:
            self._active = False
            self._queue.clear()
            self._offered_at.clear()
            self.drained.set()

    async def _pump(self) -> None:
        """Send batches as decisions are folded, up to ``PIPELINE`` batches awaiting their acks at once
        (so a burst of small decisions does not wait one round trip per batch). Each message carries
        the first decision of the oldest batch still unacknowledged: below it, everything is stored,
        whichever order the server acknowledges the batches in."""
        sending: deque[tuple[int, int, asyncio.Task[None]]] = deque()
        try:
            while True:
                while sending and sending[0][2].done():
                    _, last, task = sending.popleft()
                    task.result()  # a batch task only ends by storing its batch (or a bug: raise it)
                    self.position = max(self.position, last)
                    self._moved.set()
                if self._queue and len(sending) < PIPELINE:
                    batch = self._take()
                    low = sending[0][0] if sending else batch[0][0]
                    task = asyncio.ensure_future(self._send(batch, low))
                    sending.append((batch[0][0], batch[-1][0], task))
                    continue
                self.metrics.relay_pending = len(self._queue) + len(sending)
                if not self._queue and not sending:
                    self.drained.set()
                self._wake.clear()
                waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
                if sending:
                    waits.add(sending[0][2])
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        if not any(w is t for _, _, t in sending):
                            w.cancel()
        finally:
            await tasks.stop([t for _, _, t in sending])

    def _take(self) -> list[tuple[int, AnyCommand]]:
        """The next batch: whole decisions from the queue, up to ``MAX_BATCH`` commands."""
        batch: list[tuple[int, AnyCommand]] = []
        while self._queue:
            seq, commands = self._queue[0]
            if batch and len(batch) + len(commands) > MAX_BATCH:
                break
            batch.extend((seq, c) for c in commands)
            self._queue.popleft()
        return batch

    async def sent_through(self, seq: int) -> None:
        """Wait until the commands of every decision up to ``seq`` are stored (callers bound the wait).
        The controller holds full reconciles back on this: a decision just appended is not folded yet,
        so "nothing queued" alone would let a full reconcile block the loop before its commands go."""
        while self._active and self.position < seq:
            self._moved.clear()
            await self._moved.wait()

    def _in_flight_by_decision(self, state: ClusterState) -> dict[int, set[str]]:
        now = self.clock()
        out: dict[int, set[str]] = {}
        for cmd in state.in_flight.values():
            if is_live(cmd, now):
                out.setdefault(cmd.decision_seq, set()).add(cmd.command_id)
        return out

    async def _catch_up(self, behind: dict[int, set[str]], start: int | None) -> None:
        """Send again what may not have been sent: commands still in flight whose decision is at or
        after the position (everything in flight when no position is stored), but none of a decision a
        leader disowned."""
        batch: list[tuple[int, AnyCommand]] = []
        wanted = sorted(seq for seq in behind if start is None or seq >= start)
        disowned = (
            await self._retry("read the decision tree", functools.partial(self._disowned, wanted[0]))
            if wanted
            else set()
        )
        for seq in wanted:
            ids = behind[seq]
            if seq in disowned:
                log.error("relay.disowned_not_resent", seq=seq, commands=len(ids))
                self._refuse(seq)
                continue
            stored = await self._retry(f"read decision {seq}", functools.partial(self._decision, seq))
            if stored is None:
                continue
            decision = stored.envelope.data
            assert isinstance(decision, DecisionRecorded)
            batch.extend((seq, c) for c in commands_to_send(self.projector.state, decision) if c.id in ids)
        for i in range(0, len(batch), MAX_BATCH):
            chunk = batch[i : i + MAX_BATCH]
            await self._send(chunk, chunk[0][0])
            self.position = max(self.position, chunk[-1][0])
        log.info("relay.resumed", position=start, resent=len(batch), decisions=len(behind))

    async def _disowned(self, first: int) -> set[int]:
        """Records from ``first`` on that a later leader marker disowned (its ``causation_id`` names its
        writer's last genuine record: everything after that one, up to the marker, was not its own; a
        record named before ``first`` disowns all of them up to the marker)."""
        store: EventStore = self.projector.store
        seen: list[tuple[int, str]] = []
        out: set[int] = set()
        start = first
        while True:
            try:
                async with contextlib.aclosing(
                    store.read(start_seq=start, subjects=[DECISION_TREE])
                ) as events:
                    async for stored in events:
                        env = stored.envelope
                        if isinstance(env.data, LeaderElected) and env.causation_id:
                            named = next(
                                (i for i, (_, rid) in enumerate(seen) if rid == env.causation_id), -1
                            )
                            out.update(s for s, _ in seen[named + 1 :])
                        seen.append((stored.seq, env.id))
                return out
            except MalformedStoredEvent as err:
                seen.append((err.seq, ""))
                start = err.seq + 1

    async def _decision(self, seq: int) -> StoredEvent | None:
        store: EventStore = self.projector.store
        try:
            stored = await store.get(seq)
        except NotFound:
            log.error("relay.decision_missing", seq=seq)
            return None
        if not isinstance(stored.envelope.data, DecisionRecorded):
            log.error("relay.not_a_decision", seq=seq, type=stored.envelope.type)
            return None
        return stored

    async def _send(self, batch: list[tuple[int, AnyCommand]], relayed_from: int) -> None:
        """Store ``batch``, retrying until it is stored (see ``_retry``)."""
        started = time.perf_counter()
        first, last = batch[0][0], batch[-1][0]

        async def publish() -> None:
            await self.sink.publish(batch, relayed_from=relayed_from)

        await self._retry(f"send {len(batch)} commands of decisions {first}..{last}", publish)
        self.sent += len(batch)
        self.metrics.commands += len(batch)
        stored = time.perf_counter()
        for seq in dict.fromkeys(s for s, _ in batch):
            offered = self._offered_at.pop(seq, None)
            if offered is not None:  # catch-up resends were not offered: no decision-to-stored time
                self.metrics.relay_seconds.observe(stored - offered)
        log.debug("relay.sent", decisions=f"{first}..{last}", commands=len(batch),
                  ms=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Call until it succeeds. Transient failures (no stream leader, a lost connection, a timeout)
        are normal during an election or a restart; anything else is unexpected but retried too, since
        giving up would leave a recorded decision unsent. Only cancellation (stepping down) stops it."""
        while True:
            try:
                result = await call()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self._attempts += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                delay = self.backoff.delay(self._attempts)
                failing = time.monotonic() - self._failing_since
                self.metrics.relay_failing_seconds = failing
                level = log.error if failing >= REPORT_AFTER else log.warning
                level(
                    "relay.retry",
                    what=what,
                    attempt=self._attempts,
                    failing_seconds=round(failing, 1),
                    retry_in=round(delay, 2),
                    error=str(err),
                    kind=type(err).__name__,
                )
                await asyncio.sleep(delay)
                continue
            if self._failing_since is not None:
                after = round(time.monotonic() - self._failing_since, 1)
                log.info("relay.recovered", what=what, after_seconds=after)
            self._attempts, self._failing_since = 0, None
            self.metrics.relay_failing_seconds = 0.0
            return result


def _nothing(state: ClusterState, stored: StoredEvent) -> object:
    return None
