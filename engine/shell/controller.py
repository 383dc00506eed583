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
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
import structlog
from nats.aio.client import Client

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
from events.types import AnyCommand, DecisionRecorded, LeaderElected, NodeRemoved, PodEvent
from projections.model import ClusterState

log = structlog.get_logger("dsctl.controller")

#: seconds a reconcile waits after a pod report, so a burst of reports makes one reconcile
POD_REPORT_COALESCE = 0.02
#: seconds a status-only refresh waits while the DaemonSet still has commands in flight
IN_FLIGHT_STATUS_DELAY = 0.5
#: seconds after a node-scoped reconcile before the full one that updates status and rollouts
FULL_FOLLOW_UP = 0.2

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
        workers: int = 4,
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
        #: keys whose next reconcile must be full
        self._full: set[str] = set()
        #: seconds a full reconcile of each key took lately (moving average)
        self._cost: dict[str, float] = {}
        self._leading = False
        self.lost = asyncio.Event()
        projector.listen(self._before, self._after)

    # --- triggers (called by the projector, synchronously, around each fold) -------------------------

    def _before(self, state: ClusterState, stored: StoredEvent) -> object:
        return before(state, stored.envelope.data)

    def _after(self, state: ClusterState, stored: StoredEvent, ctx: object) -> None:
        assert isinstance(ctx, Before)
        self.metrics.events_folded += 1
        if not self._leading:
            return
        event = stored.envelope.data
        keys = affected_keys(state, event, ctx, self._cache)
        if not keys:
            return
        node = getattr(event, "name", "") if type(event).TAG.startswith("node.") else ""
        if node and not isinstance(event, NodeRemoved):
            # a node fact: reconcile just that node now (reconcile_nodes), the whole DaemonSet after
            for key in keys:
                self._dirty_nodes.setdefault(key, set()).add(node)
                self.queue.add(key)
            return
        # pod reports come in floods (three per pod): let a burst of them for one DaemonSet coalesce
        # into one reconcile; every other fact is acted on at once
        for key in keys:
            self._full.add(key)
            self.queue.add_after(
                key, self._pod_report_delay(state, key) if isinstance(event, PodEvent) else 0.0
            )

    def _pod_report_delay(self, state: ClusterState, key: str) -> float:
        """How long a pod report may wait before its DaemonSet is reconciled.

        While the DaemonSet still has commands in flight, a reconcile can only refresh its status
        (A.8), so reports that leave commands in flight wait longer; the report that answers the last
        one is acted on promptly. Otherwise reports coalesce for a few times what a reconcile of this
        DaemonSet costs, so a flood of reports never keeps the engine busy reconciling one key.
        """
        cost = self._cost.get(key, 0.0)
        if state.in_flight_by_ds.get(key):
            return max(IN_FLIGHT_STATUS_DELAY, 10 * cost)
        return max(POD_REPORT_COALESCE, 4 * cost)

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
        result = None
        if nodes and key not in self._full:
            result = reconcile_nodes(state, key, sorted(nodes), now, self._memo)
            if result is not None:  # status, rollout and everything else: a full reconcile, soon
                self._full.add(key)
                self.queue.add_after(key, FULL_FOLLOW_UP)
        if result is None:
            self._full.discard(key)
            result = reconcile(state, key, now, self._memo)
            spent = time.perf_counter() - started
            self._cost[key] = 0.7 * self._cost.get(key, spent) + 0.3 * spent
        decide_ms = (time.perf_counter() - started) * 1000
        decision = result.decision
        seq = 0
        if decision is not None:
            decision = msgspec.structs.replace(decision, leader=self.writer.holder)
            seq = await self.writer.append(decision)
            self._min_seq[key] = seq
            await self.publisher.publish(result.commands)
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
