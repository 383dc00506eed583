"""The reconciler service: events in, decisions and commands out.

    follow log ──► Projector.fold ──► triggers ──► Scheduler ──► KeyQueue lanes ──► workers
                         │                            ▲  (queue operations)             │
                         │                            └── done / failed ◄── reconcile, append (fenced) ──► log
                         └──► CommandRelay (the folded decision's commands) ──► dse.cmd.<node>

- **Keys, not events.** Triggers turn each folded event into the DaemonSet keys it can affect
  (``engine.core.triggers``); workers reconcile one key at a time per key, several keys at once.
- **The scheduler decides, the controller runs.** Every scheduling consequence (what a trigger owes a
  key, which lane runs it, when a deferred full reconcile is due, read-your-writes, retries) is in
  ``engine.reconciler.scheduler``, a pure state machine; this module is the worker loop around it:
  it feeds it triggers, applies the queue operations it answers with to the two lanes, waits where a
  step says so (the projection catching up, node-scoped work and the relay going first), runs the
  reconcile and reports how it ended.
- **Fencing.** Decisions are appended by ``engine.reconciler.fencing.DecisionWriter``; a deposed
  leader's next decision raises ``LeadershipLost`` and this engine stops reconciling.
- **No lost command.** The controller only records decisions; the commands sent are derived from the
  recorded decision by the relay (``engine.reconciler.relay``), which follows the fold and resumes from
  its stored position when this engine starts leading. The core re-decides for commands whose
  in-flight entry timed out.
- **Two lanes.** Node-scoped reconciles (a node joined, was labelled, lost a pod) run on ``workers``
  workers; full reconciles (status, rollout steps, DaemonSet changes) run one at a time on a lane of
  their own, because each blocks the event loop for its duration (30 ms at 5,000 nodes). A worker that
  finds a key needs a full reconcile hands it to that lane and is free at once, and no worker waits for
  the other lane to finish a key: the scheduler queues the key again when it does (eight keys due
  together once held every worker and starved every node event).
- **Tamper evidence** (docs/design.md). A leader marker folded while this engine leads that its writer
  did not write, or a decision under its name it did not write (the relay refuses to send it), makes
  the writer look at the decision tree at once (``DecisionWriter.check_fence``): another engine's
  election steps this one down; anything else is reported to ``on_tamper`` and fenced over.
- **Errors by class** (``events.errors``): ``LeadershipLost`` (a ``FencedOff``) steps down; a transient
  error or an unexpected one retries the key with per-key exponential backoff, reset by a success; a
  conflict retries at once, then backs off; a permanent error is logged and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import structlog

from engine.core.nodemap import EligibilityMemo
from engine.core.reconcile import ReconcileResult, reconcile, reconcile_nodes
from engine.core.triggers import Before, PlacementCache, affected_keys, before
from engine.reconciler.fencing import Clock, DecisionWriter, LeadershipLost
from engine.reconciler.relay import CommandRelay
from engine.reconciler.scheduler import (
    Add,
    AddAfter,
    CancelTimer,
    CatchUp,
    Failure,
    Full,
    Lane,
    Outcome,
    Pace,
    Scheduler,
    Scoped,
    Step,
    Yield,
)
from engine.reconciler.workqueue import KeyQueue, QueueClosed
from engine.runtime.metrics import Metrics
from engine.runtime.retry import Backoff
from engine.store.event_store import StoredEvent
from engine.store.projector import Projector
from events.errors import ConflictError, PermanentError, TransientError
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

__all__ = ["NODE_ACTION_REPORTS", "Controller", "DecisionWriter", "LeadershipLost"]

log = structlog.get_logger("dsctl.controller")

#: pod reports after which the pod's node may need a command (delete a failed or finished pod,
#: replace a gone one); the others only change status and the rollout's budget
NODE_ACTION_REPORTS = (PodFailed, PodSucceeded, PodDeleted, PodEvicted)

#: a failed reconcile of a key is retried after 0.5-1 s, doubling per failure in a row up to 30 s
#: (it was a fixed 1 s, 5 s for an unexpected error: a key failing for minutes retried every second)
RETRY = Backoff(initial=1.0, cap=30.0)

#: how long a reconcile waits for the projection to fold the key's last decision (read your writes)
CATCH_UP_TIMEOUT = 10.0


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
        #: every key starts here, and every timer fires here; node-scoped work is done by its workers
        self.queue = KeyQueue(time.monotonic)
        #: full reconciles, one at a time (see "Two lanes" above)
        self.full_queue = KeyQueue(time.monotonic)
        self.scheduler = Scheduler(retry_delay=RETRY.delay)
        #: mirrors ``scheduler.scoped_idle``, for the full lane to wait on
        self._scoped_idle = asyncio.Event()
        self._scoped_idle.set()
        self._cache = PlacementCache()
        self._memo = EligibilityMemo()
        self.lost = asyncio.Event()
        #: told of each record no engine wrote that this controller found (sequence, subject, why)
        self.on_tamper: Callable[[int, str, str], None] | None = None
        self._fence_check: asyncio.Task[None] | None = None
        projector.listen(self._before, self._after)
        # the relay learns of each decision as it is stored, not only once it is folded back
        writer.on_appended = lambda seq, decision: relay.offer(projector.state, seq, decision)
        relay.author = writer
        relay.on_foreign = self._foreign

    def _apply(self) -> None:
        """Carry out the scheduler's queue operations, in order."""
        for op in self.scheduler.drain():
            if isinstance(op, Add):
                (self.queue if op.lane is Lane.NODES else self.full_queue).add(op.key, urgent=op.urgent)
            elif isinstance(op, AddAfter):
                self.queue.add_after(op.key, op.delay)
            elif isinstance(op, CancelTimer):
                self.queue.cancel_timer(op.key)
        if self.scheduler.scoped_idle:
            self._scoped_idle.set()
        else:
            self._scoped_idle.clear()

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
        sched = self.scheduler
        if not sched.leading:
            return
        event = stored.envelope.data
        if isinstance(event, LeaderElected):
            if not self.writer.wrote(stored.envelope.id):
                # another engine's election, or a forged one: the writer tells which
                log.warning(
                    "controller.foreign_marker", seq=stored.seq, holder=event.holder, epoch=event.epoch
                )
                self._look_at_fence()
            return
        if answered is not None and not state.in_flight_by_ds.get(answered.ds_key):
            sched.commands_answered(answered.ds_key)
        keys = affected_keys(state, event, prior, self._cache)
        if type(event).TAG.startswith("node.") and not isinstance(event, NodeRemoved):
            node: str = getattr(event, "name", "")
            for key in keys:
                sched.node_changed(key, node)
        elif isinstance(event, PodEvent):
            now = time.monotonic()
            acts = isinstance(event, NODE_ACTION_REPORTS)
            for key in keys:
                sched.pod_reported(
                    key, event.node, acts=acts, pace=self._pace(state, key), now=now, folded=state.seq
                )
        else:
            for key in keys:  # a DaemonSet fact, a node removal
                sched.daemonset_changed(key)
        self._apply()

    @staticmethod
    def _pace(state: ClusterState, key: str) -> Pace:
        if state.in_flight_by_ds.get(key):
            return Pace.IN_FLIGHT
        ds = state.daemonsets.get(key)
        if ds is not None and ds.status.updated_number_scheduled < ds.status.desired_number_scheduled:
            return Pace.ROLLING
        return Pace.AT_REST

    # --- tamper evidence ---------------------------------------------------------------------------

    def _foreign(self, seq: int, subject: str, why: str) -> None:
        """A decision under this engine's name it did not write (the relay did not send it)."""
        if self.on_tamper is not None:
            self.on_tamper(seq, subject, why)
        if self.scheduler.leading:
            self._look_at_fence()

    def _look_at_fence(self) -> None:
        if self._fence_check is None or self._fence_check.done():
            self._fence_check = asyncio.ensure_future(self._check_fence())

    async def _check_fence(self) -> None:
        try:
            await self.writer.check_fence()
        except LeadershipLost as err:
            log.warning("controller.deposed", error=str(err))
            self.step_down()
        except Exception as err:  # the next append looks again
            log.warning("controller.fence_check_failed", error=repr(err))

    # --- leadership -------------------------------------------------------------------------------

    async def lead(self, epoch: int) -> None:
        """Become the reconciler: fence, start relaying commands, queue every DaemonSet, work."""
        await self.writer.elect(epoch)
        await self.projector.wait_for(self.writer.tree_seq or 0)
        self.lost.clear()
        state = self.projector.state
        keys = [*sorted(state.daemonsets), *(ds.key for ds in list(state.deleted.values()))]
        self.scheduler.lead(keys, time.monotonic())
        self._apply()
        relay = asyncio.ensure_future(self.relay.run())
        tasks = [asyncio.ensure_future(self._serve(self.queue, Lane.NODES)) for _ in range(self.workers)]
        tasks.append(asyncio.ensure_future(self._serve(self.full_queue, Lane.FULL)))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({lost, relay}, return_when=asyncio.FIRST_COMPLETED)
            if relay.done() and not relay.cancelled() and relay.exception() is not None:
                # deciding without sending would record commands nobody carries out: stop leading
                # (another engine, or this one after a pause, takes over and resumes the relay)
                log.error("controller.relay_failed", error=repr(relay.exception()))
        finally:
            self._step_down()
            fence = [self._fence_check] if self._fence_check is not None else []
            self._fence_check = None
            for t in (*tasks, relay, lost, *fence):
                t.cancel()
            _, stuck = await asyncio.wait([*tasks, relay, lost, *fence], timeout=10)
            if stuck:
                log.error("controller.workers_stuck", count=len(stuck))

    def step_down(self) -> None:
        self._step_down()
        self.lost.set()

    def _step_down(self) -> None:
        self.scheduler.step_down()
        self._apply()

    # --- the work ---------------------------------------------------------------------------------

    async def _serve(self, queue: KeyQueue, lane: Lane) -> None:
        while True:
            try:
                key = await queue.get()
            except QueueClosed:
                return
            try:
                await self._run(lane, key)
            except LeadershipLost as err:
                log.warning("controller.deposed", error=str(err))
                self.step_down()
                return
            finally:
                queue.done(key)

    async def _run(self, lane: Lane, key: str, *, forward: bool = True) -> DecisionRecorded | _Answer | None:
        """One turn of ``key`` in ``lane``; a failure is the scheduler's to retry (by its class)."""
        try:
            if lane is Lane.NODES:
                return await self._scoped(key, forward=forward)
            return await self._full(key)
        except LeadershipLost:
            raise
        except TransientError as err:
            log.warning("controller.retry", key=key, error=str(err))
            self._failed(key, lane, Failure.TRANSIENT)
        except ConflictError as err:
            log.warning("controller.conflict", key=key, error=str(err))
            self._failed(key, lane, Failure.CONFLICT)
        except PermanentError as err:
            log.error("controller.reconcile_refused", key=key, error=str(err))
            self._failed(key, lane, Failure.PERMANENT)
        except Exception:
            # a bug: retried like a transient error (backing off), so the key is not lost
            log.exception("controller.reconcile_failed", key=key)
            self._failed(key, lane, Failure.TRANSIENT)
        return None

    def _failed(self, key: str, lane: Lane, failure: Failure) -> None:
        self.scheduler.failed(key, lane, time.monotonic(), failure)
        self._apply()

    async def reconcile_key(self, key: str) -> DecisionRecorded | None:
        """One reconcile of ``key`` as the lanes would run it (node-scoped if it can be), now, by the
        caller. Outside the lanes: a full reconcile here may run beside the full lane's; it is skipped
        (None) while a lane runs the key."""
        decision = await self._run(Lane.NODES, key, forward=False)
        if decision is _FULL:
            decision = await self._run(Lane.FULL, key)
        return decision if isinstance(decision, DecisionRecorded) else None

    async def _scoped(self, key: str, *, forward: bool = True) -> DecisionRecorded | _Answer | None:
        """Serve the nodes of ``key`` that changed, or hand the key to the full lane."""
        step = await self._step(
            lambda: self.scheduler.start_scoped(key, time.monotonic(), self.projector.seq, forward=forward)
        )
        if isinstance(step, Full):  # forward=False: the caller runs it
            return _FULL
        if not isinstance(step, Scoped):
            return None
        state = self.projector.state
        now = self._now()
        started = time.perf_counter()
        result = reconcile_nodes(state, key, list(step.nodes), now, self._memo)
        pace = self._pace(state, key)
        if result is None:  # it cannot decide alone: a full reconcile
            self.scheduler.scoped_done(key, time.monotonic(), None, pace)
            self._apply()
            return _FULL if not forward else None
        decision, outcome = await self._record(key, state, result, started, "nodes")
        self.scheduler.scoped_done(key, time.monotonic(), outcome, pace)
        self._apply()
        return decision

    async def _full(self, key: str) -> DecisionRecorded | None:
        """A full reconcile of ``key``, once node-scoped work waiting and the relay went (briefly)."""
        step = await self._step(lambda: self.scheduler.full_step(key, time.monotonic(), self.projector.seq))
        if not isinstance(step, Full):
            return None
        state = self.projector.state
        now = self._now()
        started = time.perf_counter()
        result = reconcile(state, key, now, self._memo)
        # the memo keeps the current templates' tables only (a rollout leaves the old one behind)
        self._memo.retain(ds.template_hash for ds in state.daemonsets.values())
        self.scheduler.full_cost(key, time.perf_counter() - started)
        decision, outcome = await self._record(key, state, result, started, "full")
        self.scheduler.full_done(key, time.monotonic(), outcome)
        self._apply()
        return decision

    async def _step(self, ask: Callable[[], Step]) -> Step:
        """Ask the scheduler what to do, waiting where it says, until it says run or skip."""
        while True:
            step = ask()
            self._apply()
            if isinstance(step, CatchUp):
                # read your writes: the state must hold this key's last decision
                if not await self.projector.wait_for(step.seq, timeout=CATCH_UP_TIMEOUT):
                    raise TransientError(f"projection did not reach sequence {step.seq}")
            elif isinstance(step, Yield):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, step.until - time.monotonic())):
                        await self._scoped_idle.wait()
                        # and their commands sent: a full reconcile blocks the loop, sends included
                        await self.relay.sent_through(step.sent_through)
                        await self.relay.drained.wait()
            else:
                return step

    def _now(self) -> float:
        # the decision records `now` with microsecond precision: use exactly that value, so a replay
        # (which can only read the recorded one) computes the same timers
        return datetime.fromtimestamp(self.clock(), UTC).timestamp()

    async def _record(
        self, key: str, state: ClusterState, result: ReconcileResult, started: float, lane: str
    ) -> tuple[DecisionRecorded | None, Outcome]:
        """Append the decision (fenced); its commands are the relay's to send, once it is folded."""
        decided = time.perf_counter() - started
        decide_ms = decided * 1000
        self.metrics.reconcile_seconds[lane].observe(decided)
        decision = result.decision
        seq = 0
        if decision is not None:
            decision = msgspec.structs.replace(decision, leader=self.writer.holder)
            appending = time.perf_counter()
            seq = await self.writer.append(decision)
            self.metrics.appends += 1
            self.metrics.append_seconds.observe(time.perf_counter() - appending)
            self.metrics.decisions += 1
        self.metrics.reconciles += 1
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
        commands = len(decision.commands) if decision is not None else 0
        return decision, Outcome(seq=seq, commands=commands, requeue_after=result.requeue_after)

    @property
    def idle(self) -> bool:
        """Nothing queued or running in either lane, and every recorded command sent."""
        lanes = (self.queue, self.full_queue)
        return all(len(q) == 0 and not q.active for q in lanes) and self.relay.pending == 0

    def close(self) -> None:
        self.queue.close()
        self.full_queue.close()


class _Answer(enum.Enum):
    #: ``_scoped``'s answer (``forward=False``) when the key needs a full reconcile the caller runs itself
    FULL = "full"


_FULL = _Answer.FULL
