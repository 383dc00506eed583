"""The reconciler service: events in, decisions and commands out.

    follow log ──► Projector.fold ──► triggers ──► KeyQueue ──► worker: reconcile(state, key, now)
                                                                 │ decision? append (fenced) ──► log
                                                                 └ commands: publish ──► dse.cmd.<node>

- **Keys, not events.** Triggers turn each folded event into the DaemonSet keys it can affect; workers
  reconcile one key at a time per key, several keys at once.
- **Read your writes.** After appending a decision at sequence S, the key is not reconciled again until
  the projection has folded S (else it would decide again from a state that lacks its own commands:
  upstream's stale-cache duplicate pods, KEP-5647).
- **Fencing.** Decisions are appended one at a time with an expected last sequence on the whole
  decision subject tree (``Nats-Expected-Last-Subject-Sequence-Subject: dse.decision.>``). A new
  leader first appends ``leader.elected`` there, so the next decision of a deposed leader fails with
  ConflictError and that engine stops reconciling.
- **No lost command.** Commands are published after their decision is stored; a leader that starts
  (or restarts) re-publishes every command still in flight (the ``Nats-Msg-Id`` dedupes and the
  executors are idempotent), and the core re-issues commands whose in-flight entry timed out.
- **Timers.** A reconcile's ``requeue_after`` puts the key back on the queue at that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
import structlog
from nats.aio.client import Client

from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.core.nodemap import EligibilityMemo
from engine.core.reconcile import command_with_template, reconcile, reconcile_nodes
from engine.core.triggers import Before, PlacementCache, affected_keys, before
from engine.shell.metrics import Metrics
from engine.shell.projector import Projector
from engine.shell.store import EventStore, StoredEvent
from engine.shell.workqueue import KeyQueue, QueueClosed
from events import codec
from events.envelope import wrap
from events.errors import ConflictError, DsctlError, TransientError
from events.ids import stable_id
from events.subjects import DECISION_TREE, command_subject
from events.types import (
    AnyCommand,
    DecisionRecorded,
    LeaderElected,
    NodeRemoved,
    PodDeleted,
    PodEvent,
    PodEvicted,
    PodFailed,
    PodSucceeded,
)
from projections.model import ClusterState

log = structlog.get_logger("dsctl.controller")

#: pod reports after which the pod's node may need a command (delete a failed or finished pod,
#: replace a gone one); the others only change status and the rollout's budget
NODE_ACTION_REPORTS = (PodFailed, PodSucceeded, PodDeleted, PodEvicted)

#: the least a full reconcile that only refreshes status waits, so reports coalesce
STATUS_REFRESH = 0.2
#: the same while the DaemonSet has commands in flight (nothing but status can change then)
IN_FLIGHT_REFRESH = 0.5
#: the longest a full reconcile yields to pending node-scoped ones (so those are never starved of
#: the loop, and fulls are never starved by a stream of node events)
SCOPED_FIRST = 0.2
#: the least a full reconcile that takes a rollout a step further waits
FULL_FOLLOW_UP = 0.05

Clock = Callable[[], float]


class LeadershipLost(ConflictError):
    """A decision append was fenced off: another engine leads now."""


class DecisionWriter:
    """Appends the leader's decisions one at a time, each fenced on the decision subject tree."""

    def __init__(self, store: EventStore, holder: str, clock: Clock = time.time) -> None:
        self.store = store
        self.holder = holder
        self._clock = clock
        self.tree_seq: int | None = None
        self._lock = asyncio.Lock()

    async def elect(self, epoch: int) -> int:
        """Record this engine's election; from here on a deposed leader's appends fail."""
        env = wrap(
            LeaderElected(holder=self.holder, epoch=epoch),
            id=stable_id("leader", self.holder, epoch),
            occurred_at=datetime.fromtimestamp(self._clock(), UTC),
            source=self.holder,
        )
        async with self._lock:
            result = await self.store.append(env)
            self.tree_seq = result.seq
        return result.seq

    async def append(self, decision: DecisionRecorded, *, causation_id: str = "") -> int:
        if self.tree_seq is None:
            raise LeadershipLost("not elected")
        env = wrap(
            decision,
            id=stable_id("decision", decision.uid, decision.state_seq, decision.generation, self.tree_seq),
            occurred_at=datetime.fromtimestamp(self._clock(), UTC),
            source=self.holder,
            causation_id=causation_id,
        )
        async with self._lock:
            try:
                result = await self.store.append(
                    env,
                    expected_last_subject_seq=self.tree_seq,
                    expected_subject_filter=DECISION_TREE,
                )
            except ConflictError as err:
                self.tree_seq = None
                raise LeadershipLost(
                    f"decision for {decision.namespace}/{decision.name} fenced: {err}"
                ) from err
            self.tree_seq = max(self.tree_seq, result.seq)
            return result.seq


class CommandPublisher:
    """Publishes commands to their node's subject with the command id as ``Nats-Msg-Id``."""

    def __init__(self, nc: Client, *, timeout: float = 5.0) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self.published = 0

    async def publish(self, commands: Sequence[AnyCommand]) -> None:
        if not commands:
            return
        futures = []
        try:
            for cmd in commands:
                futures.append(
                    await self._js.publish_async(
                        command_subject(cmd.node),
                        codec.encode_command(cmd),
                        headers={"Nats-Msg-Id": cmd.id},
                    )
                )
            await asyncio.gather(*futures)
        except DsctlError:
            raise
        except Exception as err:
            raise TransientError(f"publishing {len(commands)} commands failed: {err}") from err
        self.published += len(commands)


class Controller:
    def __init__(
        self,
        projector: Projector,
        writer: DecisionWriter,
        publisher: CommandPublisher,
        *,
        clock: Clock = time.time,
        workers: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        self.projector = projector
        self.writer = writer
        self.publisher = publisher
        self.clock = clock
        self.workers = workers
        self.metrics = metrics or Metrics()
        self.queue = KeyQueue(time.monotonic)
        self._cache = PlacementCache()
        self._memo = EligibilityMemo()
        self._min_seq: dict[str, int] = {}
        #: keys whose next reconcile may be node-scoped, with the nodes that changed
        self._dirty_nodes: dict[str, set[str]] = {}
        #: keys whose next reconcile must be full, now (a DaemonSet fact, a node removal, ...)
        self._full_now: set[str] = set()
        #: keys with a full reconcile deferred (status, rollout steps), by when it is due (monotonic):
        #: node-scoped reconciles go on meanwhile, but never postpone it past that
        self._full_due: dict[str, float] = {}
        #: one full reconcile at a time: each blocks the loop for its duration, and node events must
        #: not queue behind several of them
        self._full_gate = asyncio.Lock()
        #: set while no node-scoped work is waiting: full reconciles let it go first (briefly)
        self._scoped_idle = asyncio.Event()
        self._scoped_idle.set()
        #: keys whose node-scoped work (decision appended, commands published) is not finished
        self._scoped_pending: set[str] = set()
        #: seconds a full reconcile of each key took lately (moving average)
        self._cost: dict[str, float] = {}
        self._leading = False
        self.lost = asyncio.Event()
        projector.listen(self._before, self._after)

    # --- triggers (called by the projector, synchronously, around each fold) -------------------------

    def _before(self, state: ClusterState, stored: StoredEvent) -> object:
        event = stored.envelope.data
        answered = state.in_flight.get(event.command_id) if isinstance(event, PodEvent) else None
        return before(state, event), answered

    def _after(self, state: ClusterState, stored: StoredEvent, ctx: object) -> None:
        assert isinstance(ctx, tuple)
        prior, answered = ctx
        assert isinstance(prior, Before)
        self.metrics.events_folded += 1
        self.metrics.commands_in_flight = len(state.in_flight)
        if not self._leading:
            return
        event = stored.envelope.data
        if answered is not None and not state.in_flight_by_ds.get(answered.ds_key):
            # the last command in flight is answered: the next batch or rollout step may be due now
            self._full_now.add(answered.ds_key)
            self.queue.add(answered.ds_key)
        keys = affected_keys(state, event, prior, self._cache)
        if not keys:
            return
        if type(event).TAG.startswith("node.") and not isinstance(event, NodeRemoved):
            # a node fact: reconcile just that node now (reconcile_nodes), the whole DaemonSet after
            node: str = getattr(event, "name", "")
            for key in keys:
                self._dirty_nodes.setdefault(key, set()).add(node)
                self._scoped_pending.add(key)
                self.queue.add(key, urgent=True)
            self._scoped_idle.clear()
            return
        if isinstance(event, PodEvent):
            for key in keys:
                if state.in_flight_by_ds.get(key):
                    # commands in flight: nothing but status can change until they are answered
                    # (A.8), and the answer to the last one triggers the next step (above)
                    continue
                if isinstance(event, NODE_ACTION_REPORTS):
                    # the pod failed, finished or went: its node may need a command at once
                    self._dirty_nodes.setdefault(key, set()).add(event.node)
                    self.queue.add(key)
                else:
                    # running, ready, ...: only status and rollout steps depend on it (or commands
                    # are still in flight, A.8): one full reconcile, soon, for a burst of them
                    self._defer_full(key)
            return
        for key in keys:  # a DaemonSet fact, a node removal: the whole DaemonSet, at once
            self._full_now.add(key)
            self.queue.add(key)

    def _defer_full(self, key: str) -> None:
        """Have a full reconcile of ``key`` done by its due time (set now if none is pending). The
        queue timer is armed again every time: an immediate add of the key (for node-scoped work)
        cancels the key's timer in the queue, but must not cancel the full reconcile still owed."""
        due = self._full_due.get(key)
        if due is None:
            due = self._full_due[key] = time.monotonic() + self._full_delay(key)
        self.queue.add_after(key, max(0.0, due - time.monotonic()))

    def _full_delay(self, key: str) -> float:
        """How long a full reconcile that is not urgent may wait, so a flood of pod reports (or of
        node joins, each followed by a full reconcile for status) makes one reconcile, not one each.

        A full reconcile walks every node and blocks the event loop while it does (30 ms at 5,000
        nodes), so the wait grows with what full reconciles of every DaemonSet cost together: they
        then take at most about a quarter of the engine's time, whatever the churn, and node events
        never queue behind them for long. A DaemonSet mid-rollout waits only for its own cost, so
        rollouts are not slowed by the rest of the fleet.
        """
        own = self._cost.get(key, 0.0)
        everyone = 4 * sum(self._cost.values())
        state = self.projector.state
        if state.in_flight_by_ds.get(key):
            # commands in flight: a reconcile can only recount status (A.8); the answer to the last
            # command triggers the next step at once (see _after)
            return max(IN_FLIGHT_REFRESH, everyone)
        ds = state.daemonsets.get(key)
        if ds is not None and ds.status.updated_number_scheduled < ds.status.desired_number_scheduled:
            return max(FULL_FOLLOW_UP, 2 * own)
        return max(STATUS_REFRESH, everyone)

    # --- leadership -------------------------------------------------------------------------------

    async def lead(self, epoch: int) -> None:
        """Become the reconciler: fence, re-publish what is in flight, queue every DaemonSet, work."""
        await self.writer.elect(epoch)
        await self.projector.wait_for(self.writer.tree_seq or 0)
        self._leading = True
        self.lost.clear()
        await self.republish_in_flight()
        for key in sorted(self.projector.state.daemonsets):
            self.queue.add(key)
        for ds in list(self.projector.state.deleted.values()):
            self.queue.add(ds.key)
        tasks = [asyncio.ensure_future(self._worker(i)) for i in range(self.workers)]
        try:
            await self.lost.wait()
        finally:
            self._leading = False
            for t in tasks:
                t.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=10)
            if stuck:
                log.error("controller.workers_stuck", count=len(stuck))

    def step_down(self) -> None:
        self._leading = False
        self.lost.set()

    async def republish_in_flight(self) -> int:
        """Publish again every command in flight (a crash between a decision and its publish)."""
        state = self.projector.state
        by_decision: dict[int, set[str]] = {}
        for cmd in state.in_flight.values():
            by_decision.setdefault(cmd.decision_seq, set()).add(cmd.command_id)
        count = 0
        for seq, ids in sorted(by_decision.items()):
            try:
                stored = await self.projector.store.get(seq)
            except DsctlError as err:
                log.warning("controller.republish_skipped", seq=seq, error=str(err))
                continue
            decision = stored.envelope.data
            if isinstance(decision, DecisionRecorded):
                cmds = [command_with_template(state, c) for c in decision.commands if c.id in ids]
                await self.publisher.publish(cmds)
                count += len(cmds)
        if count:
            log.info("controller.republished", commands=count)
        return count

    # --- the work ---------------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueClosed:
                return
            try:
                await self.reconcile_key(key)
            except LeadershipLost as err:
                log.warning("controller.deposed", error=str(err))
                self.step_down()
                return
            except TransientError as err:
                log.warning("controller.retry", key=key, error=str(err))
                self.queue.add_after(key, 1.0)
            except Exception:
                log.exception("controller.reconcile_failed", key=key)
                self.queue.add_after(key, 5.0)
            finally:
                self.queue.done(key)

    async def reconcile_key(self, key: str) -> DecisionRecorded | None:
        try:
            return await self._reconcile_key(key)
        finally:
            if key in self._scoped_pending and not self._dirty_nodes.get(key):
                self._scoped_pending.discard(key)
                if not self._scoped_pending:
                    self._scoped_idle.set()

    async def _reconcile_key(self, key: str) -> DecisionRecorded | None:
        need = self._min_seq.get(key, 0)
        if need and not await self.projector.wait_for(need, timeout=10.0):
            raise TransientError(f"projection did not reach sequence {need}")
        self._min_seq.pop(key, None)
        state = self.projector.state
        # the decision records `now` with microsecond precision: use exactly that value, so a replay
        # (which can only read the recorded one) computes the same timers
        now = datetime.fromtimestamp(self.clock(), UTC).timestamp()
        started = time.perf_counter()
        nodes = self._dirty_nodes.pop(key, None)
        due = self._full_due.get(key)
        result = None
        if nodes and key not in self._full_now:
            result = reconcile_nodes(state, key, sorted(nodes), now, self._memo)
            if result is not None:  # status, rollout and everything else: a full reconcile, soon
                if due is not None and time.monotonic() >= due:
                    self._full_now.add(key)  # the deferred one is overdue: right after this
                    self.queue.add(key)
                else:
                    self._defer_full(key)
        if result is None:
            async with self._full_gate:
                # node-scoped work goes first (briefly): it is what a joining node waits for
                for _ in range(2):
                    if self._dirty_nodes.get(key) and key not in self._full_now:
                        # a node of this DaemonSet changed meanwhile: serve that node first (node-
                        # scoped, next round); the full reconcile is due and follows right after it
                        self.queue.add(key, urgent=True)
                        return None
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SCOPED_FIRST):
                            await self._scoped_idle.wait()
                state = self.projector.state
                now = datetime.fromtimestamp(self.clock(), UTC).timestamp()
                self._full_now.discard(key)
                self._full_due.pop(key, None)
                self._dirty_nodes.pop(key, None)
                self.queue.cancel_timer(key)  # this reconcile covers it; it sets its own requeue
                started = time.perf_counter()
                result = reconcile(state, key, now, self._memo)
                spent = time.perf_counter() - started
                self._cost[key] = 0.7 * self._cost.get(key, spent) + 0.3 * spent
        decide_ms = (time.perf_counter() - started) * 1000
        decision = result.decision
        seq = 0
        if decision is not None:
            decision = msgspec.structs.replace(decision, leader=self.writer.holder)
            appending = time.perf_counter()
            seq = await self.writer.append(decision)
            self.metrics.appends += 1
            self.metrics.append_seconds_sum += time.perf_counter() - appending
            self._min_seq[key] = seq
            await self.publisher.publish(result.commands)
            if decision.commands:  # should no answer ever come, look again when the commands expire
                self.queue.add_after(key, EXPECTATIONS_TIMEOUT + 1.0)
            self.metrics.decisions += 1
            self.metrics.commands += len(decision.commands)
        self.metrics.reconciles += 1
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
        st = result.status
        log.info(
            "reconcile",
            ds=key,
            scope=list(decision.scope) if decision is not None and decision.scope else None,
            state_seq=state.seq,
            decision_seq=seq or None,
            commands=len(decision.commands) if decision else 0,
            desired=st.desired_number_scheduled,
            current=st.current_number_scheduled,
            ready=st.number_ready,
            updated=st.updated_number_scheduled,
            available=st.number_available,
            misscheduled=st.number_misscheduled,
            requeue_after=result.requeue_after,
            ms=round(decide_ms, 2),
        )
        return decision

    def close(self) -> None:
        self.queue.close()
