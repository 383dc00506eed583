"""The reconciler service: events in, decisions and commands out.

    follow log ──► Projector.fold ──► triggers ──► KeyQueue ──► worker: reconcile(state, key, now)
                         │                                       │ decision? append (fenced) ──► log
                         └──► CommandRelay (the folded decision's commands) ──► dse.cmd.<node>

- **Keys, not events.** Triggers turn each folded event into the DaemonSet keys it can affect; workers
  reconcile one key at a time per key, several keys at once.
- **Read your writes.** After appending a decision at sequence S, the key is not reconciled again until
  the projection has folded S (else it would decide again from a state that lacks its own commands:
  upstream's stale-cache duplicate pods, KEP-5647).
- **Fencing.** Decisions are appended one at a time with an expected last sequence on the whole
  decision subject tree (``Nats-Expected-Last-Subject-Sequence-Subject: dse.decision.>``). A new
  leader first appends ``leader.elected`` there, so the next decision of a deposed leader fails with
  ConflictError and that engine stops reconciling.
- **No lost command.** The controller only records decisions; the commands sent are derived from the
  recorded decision by the relay (``engine.reconciler.relay``), which follows the fold and resumes from its
  stored position when this engine starts leading. The core re-decides for commands whose in-flight
  entry timed out.
- **Two lanes.** Node-scoped reconciles (a node joined, was labelled, lost a pod) run on ``workers``
  workers; full reconciles (status, rollout steps, DaemonSet changes) run one at a time on a lane of
  their own, because each blocks the event loop for its duration (30 ms at 5,000 nodes). A worker that
  finds a key needs a full reconcile hands it to that lane and is free at once: waiting for the lane
  would hold a worker, and eight keys due together once starved every node event.
- **Timers.** A reconcile's ``requeue_after`` puts the key back on the queue at that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import structlog

from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.core.nodemap import EligibilityMemo
from engine.core.reconcile import ReconcileResult, reconcile, reconcile_nodes
from engine.core.triggers import Before, PlacementCache, affected_keys, before
from engine.reconciler.relay import CommandRelay
from engine.reconciler.workqueue import KeyQueue, QueueClosed
from engine.runtime.metrics import Metrics
from engine.store.event_store import EventStore, StoredEvent
from engine.store.projector import Projector
from events.envelope import wrap
from events.errors import ConflictError, TransientError
from events.ids import stable_id
from events.subjects import DECISION_TREE
from events.types import (
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
        #: told of each decision stored, in log order (called while the append lock is held)
        self.on_appended: Callable[[int, DecisionRecorded], None] | None = None

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
            if self.on_appended is not None and not result.duplicate:
                self.on_appended(result.seq, decision)
            return result.seq


class Controller:
    def __init__(
        self,
        projector: Projector,
        writer: DecisionWriter,
        relay: CommandRelay,
        *,
        clock: Clock = time.time,
        workers: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        self.projector = projector
        self.writer = writer
        self.relay = relay
        self.clock = clock
        self.workers = workers
        self.metrics = metrics or Metrics()
        #: every key starts here; node-scoped work is done by its workers
        self.queue = KeyQueue(time.monotonic)
        #: full reconciles, one at a time (see "Two lanes" above)
        self.full_queue = KeyQueue(time.monotonic)
        #: one reconcile of a key at a time, whichever lane runs it
        self._key_locks: dict[str, asyncio.Lock] = {}
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
        #: held by the full lane while it reconciles (one full reconcile at a time)
        self._full_gate = asyncio.Lock()
        #: set while no node-scoped work is waiting: full reconciles let it go first (briefly)
        self._scoped_idle = asyncio.Event()
        self._scoped_idle.set()
        #: keys whose node-scoped work (decision appended, commands published) is not finished
        self._scoped_pending: set[str] = set()
        #: the last decision appended with commands (full reconciles wait, briefly, for it to be sent)
        self._commanded_seq = 0
        #: seconds a full reconcile of each key took lately (moving average)
        self._cost: dict[str, float] = {}
        self._leading = False
        self.lost = asyncio.Event()
        projector.listen(self._before, self._after)
        # the relay learns of each decision as it is stored, not only once it is folded back
        writer.on_appended = lambda seq, decision: relay.offer(projector.state, seq, decision)

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
        """Become the reconciler: fence, start relaying commands, queue every DaemonSet, work."""
        await self.writer.elect(epoch)
        await self.projector.wait_for(self.writer.tree_seq or 0)
        self._leading = True
        self.lost.clear()
        self._commanded_seq = 0  # the relay starts again from its stored position
        relay = asyncio.ensure_future(self.relay.run())
        for key in sorted(self.projector.state.daemonsets):
            self.queue.add(key)
        for ds in list(self.projector.state.deleted.values()):
            self.queue.add(ds.key)
        tasks = [asyncio.ensure_future(self._worker(i)) for i in range(self.workers)]
        tasks.append(asyncio.ensure_future(self._full_lane()))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({lost, relay}, return_when=asyncio.FIRST_COMPLETED)
            if relay.done() and not relay.cancelled() and relay.exception() is not None:
                # deciding without sending would record commands nobody carries out: stop leading
                # (another engine, or this one after a pause, takes over and resumes the relay)
                log.error("controller.relay_failed", error=repr(relay.exception()))
        finally:
            self._leading = False
            for t in (*tasks, relay, lost):
                t.cancel()
            _, stuck = await asyncio.wait([*tasks, relay, lost], timeout=10)
            if stuck:
                log.error("controller.workers_stuck", count=len(stuck))

    def step_down(self) -> None:
        self._leading = False
        self.lost.set()

    # --- the work ---------------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        await self._serve(self.queue, self._node_lane)

    async def _full_lane(self) -> None:
        await self._serve(self.full_queue, self._full)

    async def _serve(self, queue: KeyQueue, work: Callable[[str], Awaitable[object]]) -> None:
        while True:
            try:
                key = await queue.get()
            except QueueClosed:
                return
            try:
                await work(key)
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
                queue.done(key)
                self._settle_scoped(key)

    def _settle_scoped(self, key: str) -> None:
        if key in self._scoped_pending and not self._dirty_nodes.get(key):
            self._scoped_pending.discard(key)
            if not self._scoped_pending:
                self._scoped_idle.set()

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        return lock

    async def reconcile_key(self, key: str) -> DecisionRecorded | None:
        """One reconcile of ``key`` as the lanes would run it (node-scoped if it can be), now."""
        try:
            decision = await self._node_lane(key, forward=False)
            if decision is _FULL:
                return await self._full(key)
            return decision if isinstance(decision, DecisionRecorded) else None
        finally:
            self._settle_scoped(key)

    async def _node_lane(self, key: str, *, forward: bool = True) -> DecisionRecorded | object | None:
        """Serve the nodes of ``key`` that changed, or hand the key to the full lane."""
        nodes = self._dirty_nodes.pop(key, None)
        if nodes and key not in self._full_now:
            async with self._lock(key):
                state = await self._caught_up(key)
                now = self._now()
                started = time.perf_counter()
                result = reconcile_nodes(state, key, sorted(nodes), now, self._memo)
                if result is not None:  # status, rollout and everything else: a full reconcile, soon
                    due = self._full_due.get(key)
                    if due is not None and time.monotonic() >= due:
                        self._full_now.add(key)  # the deferred one is overdue: right after this
                        self.queue.add(key)
                    else:
                        self._defer_full(key)
                    return await self._record(key, state, result, started)
        if not forward:
            return _FULL
        self.full_queue.add(key)
        return None

    async def _full(self, key: str) -> DecisionRecorded | None:
        """A full reconcile of ``key``: one at a time, after node-scoped work waiting (briefly)."""
        async with self._full_gate:
            # node-scoped work goes first (briefly): it is what a joining node waits for
            for _ in range(2):
                if self._dirty_nodes.get(key) and key not in self._full_now:
                    # a node of this DaemonSet changed meanwhile: serve that node first (node-scoped,
                    # in the other lane); the full reconcile is due and follows right after it
                    self.queue.add(key, urgent=True)
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SCOPED_FIRST):
                        await self._scoped_idle.wait()
                        # and their commands sent: a full reconcile blocks the loop, sends included
                        await self.relay.sent_through(self._commanded_seq)
                        await self.relay.drained.wait()
            async with self._lock(key):
                state = await self._caught_up(key)
                now = self._now()
                self._full_now.discard(key)
                self._full_due.pop(key, None)
                self._dirty_nodes.pop(key, None)
                self.queue.cancel_timer(key)  # this reconcile covers it; it sets its own requeue
                started = time.perf_counter()
                result = reconcile(state, key, now, self._memo)
                spent = time.perf_counter() - started
                self._cost[key] = 0.7 * self._cost.get(key, spent) + 0.3 * spent
                return await self._record(key, state, result, started)

    async def _caught_up(self, key: str) -> ClusterState:
        """The state, once it holds this key's last decision (read your writes)."""
        need = self._min_seq.get(key, 0)
        if need and not await self.projector.wait_for(need, timeout=10.0):
            raise TransientError(f"projection did not reach sequence {need}")
        self._min_seq.pop(key, None)
        return self.projector.state

    def _now(self) -> float:
        # the decision records `now` with microsecond precision: use exactly that value, so a replay
        # (which can only read the recorded one) computes the same timers
        return datetime.fromtimestamp(self.clock(), UTC).timestamp()

    async def _record(
        self, key: str, state: ClusterState, result: ReconcileResult, started: float
    ) -> DecisionRecorded | None:
        """Append the decision (fenced); its commands are the relay's to send, once it is folded."""
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
            if decision.commands:  # should no answer ever come, look again when the commands expire
                self.queue.add_after(key, EXPECTATIONS_TIMEOUT + 1.0)
                self._commanded_seq = max(self._commanded_seq, seq)
            self.metrics.decisions += 1
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

    @property
    def idle(self) -> bool:
        """Nothing queued or running in either lane, and every recorded command sent."""
        lanes = (self.queue, self.full_queue)
        return all(len(q) == 0 and not q.active for q in lanes) and self.relay.pending == 0

    def close(self) -> None:
        self.queue.close()
        self.full_queue.close()


#: ``_node_lane`` answer when the key needs a full reconcile and was not handed to the lane
_FULL = object()
