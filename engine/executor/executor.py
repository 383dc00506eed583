"""Executors: the kubelet's role. Carry out commands for one node (or a simulated fleet) and report
what happens to each pod as events.

Commands arrive on ``dse.cmd.<node>``, read from ``DSE_COMMANDS`` by a ``CommandFeed`` (batched direct
gets from the node's checkpoint; see ``command_feed``); a command is settled only after its effect has
been reported, so a crash in between means it is read again, not lost. Reading again is harmless: a
command id already applied, a create for a pod that exists, or a delete for a pod that is gone does
nothing twice (a delete of an unknown pod is still answered with ``pod.deleted`` so the controller's
in-flight entry clears), and a command the log showed answered at start is skipped. Every report is
appended with a ``Nats-Msg-Id`` derived from the command id, the report type and the pod, so a report
repeated after a crash is stored once.

On start an executor rebuilds what it knows (its pods, and which commands the engine still waits for)
from the newest snapshot and the log after it, then restores them (``restore``): a simulated pod
still Pending goes on to Ready; a ``Lasting`` driver (real processes) re-attaches to the pods still
running and reports those that died meanwhile; and a pod the log shows Terminating is stopped now,
because the delete that started it is already counted as applied (its ``pod.terminating`` carries the
command id) and would otherwise never finish.

After a NATS outage the executor reports again the current state of every pod it knows
(``reassert``), with the same ids as the first reports (tag, pod and the pod's create command id), so a
report already stored is dropped as a duplicate and one lost on the way is stored now.

At a stop the executor leaves the pods of a lasting driver running unless ``close(stop_pods=True)``.

A fleet executor (every node) skips the nodes in ``excluded``: those with an executor of their own,
which holds their node lease (see ``executor_run``).

**A removed node.** The projection drops a removed node's pods and the commands in flight for them
(as Kubernetes' pod GC does), and no command about them ever comes, so the executor learns of the
removal from the log (``forget_node``, fed by ``engine/executor/node_removals.py``) and:

- forgets the node's pods when its driver ``Forgets`` (the simulator: a fleet, or a simulated node
  executor): their simulated life stops, nothing more is reported about them, and their ``LocalPod``
  and lock go (the sim log keeps them as deleted pods, bounded). Nothing is reported because the node
  and its pods are gone from the projection: a ``pod.created`` would bring a pod back there on a node
  that no longer exists (the fold's create does not look for the node), and any other report would
  only answer commands the removal already answered;
- with a driver that does not forget (real processes: a node executor's pods are its machine's), keeps
  the processes running as today, but moves them out of ``pods`` into ``detached``: they are never
  reported again (a reconnect's ``reassert`` would otherwise bring them back into the projection) and
  a pod placed on the node after it registers again starts fresh. ``detached`` holds at most what
  runs on that one machine; an operator stops those processes (a restart does not adopt them: the
  log it reads no longer has them);
- records the removal (``removed``, the last ``REMEMBERED_REMOVALS`` nodes) with its log position, so
  a command decided before the removal and read after it (commands and events are separate streams)
  is skipped unanswered: the removal already cleared it from the projection's in-flight set. A command
  decided after it is for the node registered again under the same name: a fresh node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

import msgspec
import structlog

from engine.executor.drivers.base import Driver, Forgets, Lasting, LocalPod, PodReporter, state_reports
from events.errors import DsctlError, PermanentError
from events.ids import stable_id
from events.k8s import PodTemplate
from events.types import AnyCommand, CreatePod, DeletePod, EvictPod, PodDeleted, PodEvent
from projections.lookups import owner_revision
from projections.model import ClusterState

log = structlog.get_logger("dsctl.executor")

#: how many applied command ids an executor remembers (see ``RecentIds``)
REMEMBERED_COMMANDS = 100_000
#: how many removed nodes an executor remembers (their removal's log position; see the module notes)
REMEMBERED_REMOVALS = 10_000


class RecentIds:
    """The last ``limit`` ids added, oldest forgotten first: which commands were already carried out.

    Forgetting the old ones is safe because an old id cannot come back. The feed reads each node's
    commands forward from its checkpoint, and the checkpoint only moves past commands settled (see
    ``command_feed``), so a command is read again only while it is among the last ones read (a crash
    or a redelivery before its checkpoint was written), far fewer than ``limit``; and after a restart
    this set starts empty anyway: commands answered before the start are skipped by
    ``Executor.answered_before_start``, from the log, not from this set.
    """

    def __init__(self, limit: int = REMEMBERED_COMMANDS) -> None:
        if limit < 1:
            raise ValueError(f"RecentIds limit must be at least 1, got {limit}")
        self.limit = limit
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: str) -> None:
        if item in self._ids:
            return
        self._ids.add(item)
        self._order.append(item)
        if len(self._order) > self.limit:
            self._ids.discard(self._order.popleft())


class Delivery(msgspec.Struct, kw_only=True):
    """One command as delivered, with the means to settle it."""

    command: AnyCommand | None
    ack: Callable[[], Awaitable[None]]
    term: Callable[[], Awaitable[None]]
    nak: Callable[[float], Awaitable[None]]
    #: set when the payload did not decode (the message is terminated, never retried)
    error: str = ""
    redelivered: bool = False
    #: the sequence of the decision the command comes from (0: unknown)
    decision_seq: int = 0
    #: when the command was stored (RFC 3339, the server's clock; "" when unknown)
    sent_at: str = ""


class CommandSource(Protocol):
    def deliveries(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None: ...


class Appender(Protocol):
    async def __call__(self, event: PodEvent, *, event_id: str, causation_id: str) -> None: ...


class LogReporter:
    """Reports pod events to the log, with ids that make repeated reports idempotent."""

    def __init__(self, append: Appender, source: str) -> None:
        self._append = append
        self.source = source

    async def report(self, event: PodEvent, *, causation_id: str = "") -> None:
        event_id = stable_id(
            "report", event.TAG, event.namespace, event.name, event.command_id or causation_id
        )
        await self._append(event, event_id=event_id, causation_id=causation_id)


class Executor:
    def __init__(
        self,
        driver: Driver,
        reporter: PodReporter,
        *,
        nodes: frozenset[str] | None = None,
        concurrency: int = 256,
        remembered_commands: int = REMEMBERED_COMMANDS,
    ) -> None:
        """``nodes``: the nodes served (None: every node, a fleet)."""
        self.driver = driver
        self.reporter = reporter
        self.nodes = nodes
        self.pods: dict[str, LocalPod] = {}
        self.applied = RecentIds(remembered_commands)
        #: removed nodes -> the log position of their removal (the last ``REMEMBERED_REMOVALS``)
        self.removed: OrderedDict[str, int] = OrderedDict()
        #: pods of removed nodes a driver that does not forget keeps running (see the module notes)
        self.detached: dict[str, LocalPod] = {}
        #: pods forgotten because their node was removed
        self.forgotten = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.handled = 0
        #: nodes a fleet leaves alone because they have an executor of their own
        self.excluded: frozenset[str] = frozenset()
        #: times the pods' state was reported again after a reconnect
        self.reasserted = 0
        #: the log position ``recover`` read (0: none): a command decided at or before it and not in
        #: flight then had been answered (or given up by the engine) before this executor started
        self.recovered_seq = 0
        self.open_commands: frozenset[str] = frozenset()
        #: commands skipped because the log showed them answered before the start
        self.skipped_answered = 0

    def serves(self, node: str) -> bool:
        if self.nodes is None:
            return node not in self.excluded
        return node in self.nodes

    # --- recovery -------------------------------------------------------------------------------------

    def recover(self, state: ClusterState) -> list[LocalPod]:
        """Adopt the pods the log says live on our nodes; returns those whose life must resume."""
        resume: list[LocalPod] = []
        self.recovered_seq = state.seq
        self.open_commands = frozenset(state.in_flight)
        for pod in state.pods.values():
            if not self.serves(pod.node):
                continue
            if pod.command_id:
                self.applied.add(pod.command_id)
            found = owner_revision(state, pod.owner_uid, pod.revision_hash, pod.namespace)
            template = found[1].template if found is not None else PodTemplate()
            local = LocalPod(
                namespace=pod.namespace,
                name=pod.name,
                uid=pod.uid,
                node=pod.node,
                template=template,
                owner_uid=pod.owner_uid,
                owner_name=pod.owner_name,
                revision_hash=pod.revision_hash,
                phase=pod.phase,
                ready=pod.ready,
                terminating=pod.deletion_timestamp is not None,
                command_id=pod.command_id,
            )
            self.pods[local.key] = local
            if not pod.terminal and not local.terminating and not pod.ready:
                resume.append(local)
        return resume

    async def resume(self, pods: list[LocalPod]) -> None:
        resume = getattr(self.driver, "resume", None)
        if resume is None:
            return
        for pod in pods:
            await resume(pod, pod.command_id or pod.key, self.reporter)

    async def restore(self, resume: list[LocalPod]) -> None:
        """Make the node match what ``recover`` read from the log (see the module notes)."""
        if isinstance(self.driver, Lasting):
            await self.driver.reattach(list(self.pods.values()), self.reporter, nodes=self.nodes)
        else:
            await self.resume(resume)
        for pod in list(self.pods.values()):
            if pod.terminating and pod.phase != "Deleted":
                self._in_background(self._finish_stop(pod))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("executor.background_failed", error=repr(task.exception()))

    async def _finish_stop(self, pod: LocalPod) -> None:
        """Finish a delete an earlier executor started (reported as a delete: the eviction reason, if
        it was one, is not in the log)."""
        lock = self._locks.setdefault(pod.key, asyncio.Lock())
        async with lock:
            if self.pods.get(pod.key) is not pod or pod.phase == "Deleted":
                return
            log.info("executor.finishing_delete", pod=pod.key)
            await self.driver.stop(
                pod, pod.command_id or pod.key, self.reporter, grace_seconds=pod.grace_seconds, evict=False
            )
            if pod.phase == "Deleted":
                self.pods.pop(pod.key, None)
        if pod.key not in self.pods and not lock.locked():
            self._locks.pop(pod.key, None)

    async def reassert(self, *, concurrency: int = 64) -> int:
        """Report again the current state of every pod (after a reconnect); returns how many pods.

        Each pod is reported under its lock, so a command for it never interleaves (a ``pod.running``
        after that pod's ``pod.deleted`` is harmless to the fold, but would read oddly in the log).
        Several pods at a time, because each report waits for its own append.
        """
        slots = asyncio.Semaphore(concurrency)

        async def one(pod: LocalPod) -> None:
            async with slots:
                lock = self._locks.setdefault(pod.key, asyncio.Lock())
                async with lock:
                    if self.pods.get(pod.key) is not pod:
                        return
                    for event in state_reports(pod):
                        await self.reporter.report(event, causation_id=pod.command_id)

        pods = [p for p in self.pods.values() if self.serves(p.node)]
        await asyncio.gather(*(one(p) for p in pods))
        self.reasserted += 1
        return len(pods)

    # --- removed nodes --------------------------------------------------------------------------------

    async def forget_node(self, node: str, removed_seq: int) -> int:
        """The log removed ``node`` at ``removed_seq``: let its pods go (see the module notes); returns
        how many pods were let go. Reports nothing. Each pod under its lock, so a command being carried
        out for it finishes first."""
        if not self.serves(node) or removed_seq <= self.recovered_seq:
            return 0  # another's node, or a removal the start state already had (its pods were not adopted)
        self.removed[node] = removed_seq
        self.removed.move_to_end(node)
        while len(self.removed) > REMEMBERED_REMOVALS:
            self.removed.popitem(last=False)
        forgets = isinstance(self.driver, Forgets)
        let_go = 0
        for pod in [p for p in self.pods.values() if p.node == node]:
            lock = self._locks.setdefault(pod.key, asyncio.Lock())
            async with lock:
                if self.pods.get(pod.key) is not pod:
                    continue
                if forgets:
                    assert isinstance(self.driver, Forgets)
                    await self.driver.forget(pod)
                else:
                    self.detached[pod.key] = pod
                del self.pods[pod.key]
                let_go += 1
            if pod.key not in self.pods and not lock.locked():
                self._locks.pop(pod.key, None)
        self.forgotten += let_go
        log.info("executor.node_removed", node=node, seq=removed_seq, pods=let_go, kept_running=not forgets)
        return let_go

    # --- commands -------------------------------------------------------------------------------------

    async def run(self, source: CommandSource) -> None:
        """Consume until cancelled; each delivery is handled in its own task, serialised per pod."""
        try:
            async for delivery in source.deliveries():
                await self._slots.acquire()
                task = asyncio.ensure_future(self._settle(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _settle(self, delivery: Delivery) -> None:
        if delivery.command is None:
            log.error("executor.bad_command", error=delivery.error)
            await delivery.term()
            return
        cmd = delivery.command
        try:
            await self.handle(cmd, decision_seq=delivery.decision_seq)
        except PermanentError as err:
            log.error("executor.refused", command=cmd.id, error=str(err))
            await delivery.term()
            return
        except DsctlError as err:
            log.warning("executor.retry", command=cmd.id, error=str(err))
            await delivery.nak(1.0)
            return
        except Exception:
            log.exception("executor.failed", command=cmd.id)
            await delivery.nak(2.0)
            return
        await delivery.ack()

    def answered_before_start(self, cmd: AnyCommand, decision_seq: int) -> bool:
        """The log read at start already had this command's decision and no longer waited for it.

        This replaces reading every pod report of the node at start to learn which commands were
        carried out: the in-flight set of the recovered state says the same, in memory, at any log
        length. A command read again after a crash (its checkpoint not yet written) is skipped here.
        """
        return 0 < decision_seq <= self.recovered_seq and cmd.id not in self.open_commands

    def decided_before_removal(self, cmd: AnyCommand, decision_seq: int) -> bool:
        """The command's node was removed after its decision: the removal answered it (module notes)."""
        removed_at = self.removed.get(cmd.node)
        return removed_at is not None and 0 < decision_seq < removed_at

    async def handle(self, cmd: AnyCommand, *, decision_seq: int = 0) -> None:
        if cmd.id in self.applied or not self.serves(cmd.node):
            return
        if self.answered_before_start(cmd, decision_seq):
            self.applied.add(cmd.id)
            self.skipped_answered += 1
            return
        if self.decided_before_removal(cmd, decision_seq):
            self.applied.add(cmd.id)
            log.info("executor.skipped_for_removed_node", command=cmd.id, node=cmd.node)
            return
        key = f"{cmd.namespace}/{cmd.pod_name}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if cmd.id in self.applied:
                return
            if self.decided_before_removal(cmd, decision_seq):  # removed while this waited for the lock
                self.applied.add(cmd.id)
                return
            started = time.perf_counter()
            match cmd:
                case CreatePod():
                    await self._create(cmd, key)
                case DeletePod() | EvictPod():
                    await self._delete(cmd, key)
            self.applied.add(cmd.id)
            self.handled += 1
            log.debug(
                "executor.applied",
                command=cmd.id,
                kind=type(cmd).__name__,
                pod=key,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        if key not in self.pods and not lock.locked():
            self._locks.pop(key, None)

    async def _create(self, cmd: CreatePod, key: str) -> None:
        existing = self.pods.get(key)
        if existing is not None and existing.phase != "Deleted":
            return  # the pod exists: a second create for it (e.g. re-issued after a timeout) is a no-op
        if cmd.template is None:
            raise PermanentError(f"create command {cmd.id} carries no pod template")
        pod = LocalPod(
            namespace=cmd.namespace,
            name=cmd.pod_name,
            uid=cmd.pod_uid,
            node=cmd.node,
            template=cmd.template,
            owner_uid=cmd.owner_uid,
            owner_name=cmd.owner_name,
            revision_hash=cmd.revision_hash,
            command_id=cmd.id,
        )
        self.pods[key] = pod
        await self.driver.start(pod, cmd.id, self.reporter)

    async def _delete(self, cmd: DeletePod | EvictPod, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or pod.phase == "Deleted":
            await self.reporter.report(
                PodDeleted(namespace=cmd.namespace, name=cmd.pod_name, node=cmd.node, command_id=cmd.id),
                causation_id=cmd.id,
            )
            return
        grace = pod.grace_seconds
        if isinstance(cmd, DeletePod) and cmd.grace_period_seconds is not None:
            grace = float(cmd.grace_period_seconds)
        await self.driver.stop(
            pod, cmd.id, self.reporter, grace_seconds=grace, evict=isinstance(cmd, EvictPod)
        )
        if pod.phase == "Deleted":
            self.pods.pop(key, None)

    async def close(self, *, stop_pods: bool = False) -> None:
        """Stop background work and the driver; a lasting driver's pods keep running unless
        ``stop_pods`` (then they are stopped and reported failed)."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if isinstance(self.driver, Lasting):
            await self.driver.shutdown(self.reporter, stop_pods=stop_pods)
        else:
            await self.driver.close()
