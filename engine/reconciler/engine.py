"""Wiring: the engine process (projection + lease + controller) and executor processes, from parts.

``Engine.run`` loops forever: wait for the lease, lead (fence, reconcile) while renewing it, and go back
to waiting when the lease or the fencing says another engine leads. The projection keeps following the
log the whole time, so a follower that takes over starts from a warm state.

Setting the store up is the store's (``engine.store.setup.ensure``: only an engine or ``dsctl admin
streams`` creates or changes definitions); ``prepare`` is the engine's start-up call of it.

Tamper evidence (docs/design.md, "Tamper evidence"). At start the store is pinned to the event stream
there (``IdentifiedStore.pin``) and the log is checked against what was built from it before (the
snapshot's last record, the relay's position in ``DSE_COMMANDS``): a stream that lost or replaced what
those saw raises ``LogIntegrityError`` from ``start``, so the process exits naming it. While running, the
stream deleted, replaced, rewound or with a gap (seen by the follower's ordered read or by the watch
every 2 s) makes the engine stop reconciling for good: it steps down, gives the lease up, never takes
it again, sets ``dsctl_log_integrity_failed`` and logs ``engine.log_untrusted`` at error level every
``UNTRUSTED_REPEAT`` seconds, and stays up rather than exiting, because a supervisor restarting it would
run the start-up ``ensure``, which creates a missing stream (right on a first run, a silent cover-up
here), and because a live process keeps its metrics for a person to see. Records no engine wrote
(forged markers and decisions, garbage on the decision tree, a lease key written over) are refused
and counted in ``dsctl_tamper_records_total``; the engine goes on leading, since stopping for them would
give anyone able to publish a switch that stops the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog
from nats.aio.client import Client

from engine.reconciler.controller import Controller, DecisionWriter
from engine.reconciler.relay import CommandRelay, JetStreamCommandSink
from engine.runtime import tasks
from engine.runtime.gc_tuning import tune_gc
from engine.runtime.metrics import Metrics
from engine.store.event_store import EventStore, JetStreamEventStore
from engine.store.jetstream_api import stream_info
from engine.store.lease import LeaderLease, Lease
from engine.store.port import IdentifiedStore, LogIntegrityError
from engine.store.projector import ObjectSnapshots, Projector
from engine.store.read_ahead import ReadAhead
from engine.store.setup import SetupReport, ensure
from engine.store.streams import EVENTS_STREAM, LEADER_BUCKET, SNAPSHOTS_BUCKET
from events.errors import ConflictError, DsctlError, NotFound, TransientError

log = structlog.get_logger("dsctl.runtime")

#: how often an engine that stopped reconciling says so again (error level), until a person restarts it
UNTRUSTED_REPEAT = 30.0
#: record sequences remembered for counting each tamper finding once
_TAMPER_MEMORY = 10_000


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def prepare(nc: Client, *, lease_ttl: float | None = None, replicas: int | None = None) -> SetupReport:
    """Set the store up as an engine does before ``Engine.start``: ``ensure`` (create, repair ours,
    keep the operator's). Run the engine with the ``lease_ttl`` of the report: without an explicit
    ``lease_ttl`` the leader bucket keeps the TTL it has.

    Creating ``DSE_EVENTS`` is right on a first run and a cover-up after it was deleted: when it is
    missing but something built from it is there (``previous_log``), this raises ``LogIntegrityError``
    instead of creating an empty one."""
    await refuse_a_lost_log(nc)
    return await ensure(nc, replicas=replicas, lease_ttl=lease_ttl)


async def previous_log(nc: Client) -> str | None:
    """What shows that an event stream existed here before, if anything does: a snapshot of the read
    model, or commands relayed from its decisions."""
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        snapshots = ObjectSnapshots(await js.object_store(SNAPSHOTS_BUCKET))
        if await snapshots.load() is not None:
            return f"the object store {SNAPSHOTS_BUCKET} holds a snapshot of the read model"
    with contextlib.suppress(DsctlError):
        position = await JetStreamCommandSink(nc).position()
        if position is not None:
            return f"DSE_COMMANDS holds commands relayed from decision sequence {position}"
    return None


async def refuse_a_lost_log(nc: Client) -> None:
    """Raise ``LogIntegrityError`` when ``DSE_EVENTS`` is missing and ``previous_log`` finds traces
    of one (``dsctl admin streams`` still creates it for an operator who means to start over, after
    removing the snapshot and the command history)."""
    try:
        await stream_info(nc, EVENTS_STREAM)
        return
    except NotFound:
        pass
    evidence = await previous_log(nc)
    if evidence is not None:
        raise LogIntegrityError(
            f"the event stream {EVENTS_STREAM} does not exist, but {evidence}: it was deleted. Refusing to "
            "create an empty one over it; restore it, or, to start over on purpose, remove the snapshot "
            f"({SNAPSHOTS_BUCKET}) and the command history (DSE_COMMANDS) first",
            "stream_deleted",
        )


class Engine:
    def __init__(
        self,
        nc: Client,
        *,
        identity: str | None = None,
        lease_ttl: float = 5.0,
        workers: int = 8,
        snapshot_every: int = 50_000,
        metrics: Metrics | None = None,
        store: EventStore | None = None,
        read_ahead: ReadAhead | None = None,
    ) -> None:
        """``read_ahead``: a long catch-up at start is read by a child process while this one folds
        (``engine/store/read_ahead.py``; ``dsctl engine run`` passes one, ``dsctl up`` does not: its
        terminal shows the live view, and the child's logs would go there)."""
        self.nc = nc
        self.read_ahead = read_ahead
        self.identity = identity or default_identity()
        self.lease_ttl = lease_ttl
        self.metrics = metrics or Metrics()
        self.store = store or JetStreamEventStore(nc)
        self.projector: Projector | None = None
        self.controller: Controller | None = None
        self.workers = workers
        self.snapshot_every = snapshot_every
        self.leading = asyncio.Event()
        self.lease: LeaderLease | None = None
        self.writer: DecisionWriter | None = None
        #: why this engine stopped reconciling for good (the event log cannot be trusted), if it did
        self.integrity: LogIntegrityError | None = None
        self._untrusted = asyncio.Event()
        self._tamper_seqs: dict[int, None] = {}

    async def start(self, *, use_snapshot: bool = True) -> Projector:
        """Pin the event stream, load the projection and check the log against what was derived from
        it before; raises ``LogIntegrityError`` when it is not the log those were built from."""
        js = self.nc.jetstream()
        if isinstance(self.store, IdentifiedStore):
            await self.store.pin()
        snapshots = ObjectSnapshots(await js.object_store(SNAPSHOTS_BUCKET))
        self.projector = Projector(
            self.store, snapshots, snapshot_every=self.snapshot_every, read_ahead=self.read_ahead
        )
        self.projector.on_tamper(self.tamper_record)
        # the per-DaemonSet gauges are read from the live projection at scrape time
        projector = self.projector
        self.metrics.state = lambda: projector.state
        await self.projector.load(use_snapshot=use_snapshot)
        await self._check_against_commands()
        if self.projector.replayed >= self.snapshot_every:
            # a long replay: snapshot now, before leading, rather than on the first event after it
            # (a large snapshot blocks the loop for a moment, which must not land on live work)
            await self.projector.save_snapshot()
        tune_gc()
        self.writer = DecisionWriter(
            self.store, self.identity, guard=self._still_leading, on_tamper=self.tamper_record
        )
        self.controller = Controller(
            self.projector,
            self.writer,
            CommandRelay(self.projector, JetStreamCommandSink(self.nc), metrics=self.metrics),
            workers=self.workers,
            metrics=self.metrics,
        )
        self.controller.on_tamper = self.tamper_record
        return self.projector

    async def _check_against_commands(self) -> None:
        """The relay's position in ``DSE_COMMANDS`` names a decision sequence every command below which
        was sent; an event stream ending before it lost what those commands were derived from."""
        assert self.projector is not None
        try:
            position = await JetStreamCommandSink(self.nc).position()
        except DsctlError as err:  # no command stream (yet): nothing to compare with
            log.debug("engine.no_relay_position", error=str(err))
            return
        end = await self.store.last_seq()
        if position is not None and position > end:
            raise LogIntegrityError(
                f"DSE_COMMANDS holds commands relayed from decision sequence {position}, but the event "
                f"stream ends at {end}: it was replaced or lost events",
                "log_behind_commands",
            )

    # --- tamper evidence ---------------------------------------------------------------------------

    def tamper_record(self, seq: int, subject: str, why: str) -> None:
        """A record no engine wrote, reported by the projector, the writer or the relay (counted once)."""
        if seq in self._tamper_seqs:
            return
        self._tamper_seqs[seq] = None
        if len(self._tamper_seqs) > _TAMPER_MEMORY:
            del self._tamper_seqs[next(iter(self._tamper_seqs))]
        self.metrics.tamper_records += 1

    def _lease_forged(self, written: str) -> None:
        self.metrics.tamper_records += 1

    def untrusted(self, err: LogIntegrityError) -> None:
        """Stop reconciling for good: the event log is not the one this engine was following."""
        if self.integrity is not None:
            return
        self.integrity = err
        if self.projector is not None:
            self.projector.untrusted = self.projector.untrusted or err
        self.metrics.log_integrity_failed = 1
        log.error(
            "engine.log_untrusted",
            kind=err.kind,
            error=str(err),
            identity=self.identity,
            action="stopped reconciling; this engine will not lead again until it is restarted",
        )
        self._untrusted.set()

    async def _still_leading(self) -> int | None:
        """The writer's guard: renew the lease now; its revision, or None when it is not ours."""
        lease = self.lease
        if lease is None or self.integrity is not None:
            return None
        try:
            async with asyncio.timeout(self.lease_ttl / 3):
                await lease.renew()
        except (ConflictError, TransientError, TimeoutError) as err:
            log.warning("engine.lease_check_failed", error=str(err))
            return None
        return lease.revision

    async def _took_over(self, holder: str, revision: int) -> bool:
        """The lease key names ``holder`` at ``revision`` over our live lease: an engine that took it
        appends its leader marker at once, so look for one after ours in the projection (briefly)."""
        assert self.projector is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(1.0, self.lease_ttl / 6)
        while True:
            # the fold's authority is the latest marker: one by ``holder`` came after ours
            a = self.projector.state.authority
            if a.holder == holder and holder != self.identity and 0 < a.epoch <= revision:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def _follow(self) -> None:
        assert self.projector is not None
        try:
            await self.projector.run()
        except LogIntegrityError as err:
            self.untrusted(err)
        except Exception as err:  # a projection that stopped following cannot be led from either
            log.exception("engine.projection_failed")
            self.untrusted(
                LogIntegrityError(f"the projection stopped following the log: {err!r}", "projection_stopped")
            )

    async def _acquire(self, lease: LeaderLease) -> Lease | None:
        """The lease, or None once the log is untrusted (then it is not taken, or given back)."""
        acquiring = asyncio.ensure_future(lease.acquire())
        refusing = asyncio.ensure_future(self._untrusted.wait())
        try:
            await asyncio.wait({acquiring, refusing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await tasks.stop([t for t in (acquiring, refusing) if not t.done()])
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            if self.integrity is None:
                return acquiring.result()
            await lease.release()
        return None

    async def run(self) -> None:
        if self.projector is None or self.controller is None:
            await self.start()
        assert self.projector is not None and self.controller is not None
        kv = await self.nc.jetstream().key_value(LEADER_BUCKET)
        lease = LeaderLease(
            kv, self.identity, self.lease_ttl, verify_takeover=self._took_over, on_forged=self._lease_forged
        )
        self.lease = lease
        follower = asyncio.ensure_future(self._follow())
        lag = asyncio.ensure_future(self._watch_lag())
        try:
            while self.integrity is None:
                held = await self._acquire(lease)
                if held is None:
                    break
                self.metrics.is_leader = 1
                self.leading.set()
                holding = asyncio.ensure_future(lease.hold())
                leading = asyncio.ensure_future(self.controller.lead(held.epoch))
                refusing = asyncio.ensure_future(self._untrusted.wait())
                try:
                    done, _ = await asyncio.wait(
                        {holding, leading, refusing}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        if task is not refusing and task.exception() is not None:
                            log.error("engine.leadership_error", error=str(task.exception()))
                finally:
                    self.controller.step_down()
                    self.leading.clear()
                    self.metrics.is_leader = 0
                    await tasks.stop([holding, leading, refusing], timeout=15.0)
                log.warning("engine.stepped_down", identity=self.identity)
                if self.integrity is None:
                    await asyncio.sleep(self.lease_ttl / 4)
            await lease.release()  # let a follower lead if its own log is sound: it checks for itself
            while True:  # untrusted: say so until someone looks (see the module docstring)
                await asyncio.sleep(UNTRUSTED_REPEAT)
                assert self.integrity is not None
                log.error("engine.log_untrusted", kind=self.integrity.kind, error=str(self.integrity),
                          identity=self.identity, action="not reconciling")  # fmt: skip
        finally:
            self.controller.close()
            await lease.release()
            await tasks.stop([lag, follower])

    async def measure_lag(self) -> int:
        """Stream sequences not yet folded into the projection (the ``dsctl_projection_lag`` gauge).
        A pinned store checks the stream is still the one pinned (``LogIntegrityError``), and a stream
        ending before what was folded from it lost events."""
        assert self.projector is not None
        folded = self.projector.seq
        last = await self.store.last_seq()
        if last < folded:
            raise LogIntegrityError(
                f"the event stream ends at {last}, but {folded} events were folded from it", "last_seq_back"
            )
        self.metrics.projection_lag = last - folded
        return self.metrics.projection_lag

    async def _watch_lag(self, period: float = 2.0) -> None:
        """Every ``period``: the lag, and the stream's identity. A failed check is looked at again a
        second later before the log counts as untrusted (a stream leader election can answer oddly)."""
        doubted: LogIntegrityError | None = None
        while self.integrity is None:
            try:
                await self.measure_lag()
                doubted = None
            except LogIntegrityError as err:
                if doubted is None:
                    log.warning("engine.log_doubted", kind=err.kind, error=str(err))
                    doubted = err
                    await asyncio.sleep(1.0)
                    continue
                self.untrusted(err)
                return
            except DsctlError:
                pass
            await asyncio.sleep(period)
