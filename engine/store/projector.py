"""The projection runner: keeps a ``ClusterState`` folded up to the tail of the event log.

Start: load the newest snapshot (object store ``dse_snapshots``), then replay only the events after
the sequence it covers. Run: follow the tail with an ordered consumer and fold each event in order, telling
listeners (the controller's triggers) before and after. Snapshots are written every
``snapshot_every`` events or ``snapshot_seconds`` seconds, whichever comes first, off the fold's path.

A stored message that does not decode is skipped with an error log naming its sequence: the log is
immutable, and one bad message must not stop the engine forever. (Ingest validation keeps such
messages out; the skip is the last line of defence.)

Tamper evidence (docs/design.md, "Tamper evidence"): the fold must see every sequence in order, so a
gap (a message gone from the middle) raises ``LogIntegrityError``, as does a snapshot whose sequence
the stream does not reach or whose last record is not the one the stream holds there (the stream was
replaced). Records on the decision tree that no engine wrote are never folded: one that does not
decode, one misplaced (``projections.authority.misplaced``, skipped here), one the fold refuses
(``projections.authority.judge``). Each is logged at error level as ``projector.tamper`` and handed to
the ``on_tamper`` listeners (the engine counts them), never passed over quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Callable
from typing import Protocol

import structlog
from nats.js.errors import NotFoundError, ObjectNotFoundError

from engine.store.jetstream_store import time_from_ns
from engine.store.port import (
    EventStore,
    IdentifiedStore,
    LogIntegrityError,
    MalformedStoredEvent,
    StoredEvent,
    decode_stored,
)
from engine.store.read_ahead import ReadAhead, ReadAheadFailed
from events.errors import DsctlError, MalformedEvent, NotFound
from events.types import DecisionRecorded, LeaderElected
from projections import snapshot
from projections.authority import misplaced, on_tree, refusal
from projections.fold import apply
from projections.model import ClusterState

log = structlog.get_logger("dsctl.projector")

SNAPSHOT_KEY = "cluster"

#: called before an event is folded; the value it returns is handed to the after-listener
BeforeListener = Callable[[ClusterState, StoredEvent], object]
AfterListener = Callable[[ClusterState, StoredEvent, object], None]
#: told of each record no engine wrote: (sequence, subject, why)
TamperListener = Callable[[int, str, str], None]
#: the record types only the engine writes, on the decision tree (``projections.authority``)
_TREE_RECORDS = frozenset((DecisionRecorded, LeaderElected))
#: the most tamper findings a projector keeps (the log and the listeners get every one)
KEEP_TAMPERED = 1000


class SnapshotStore(Protocol):
    async def load(self) -> bytes | None: ...

    async def save(self, data: bytes) -> None: ...


class ObjectSnapshots:
    """Snapshots in a JetStream object store: a large fleet's state is tens of MB, far above a KV
    value's limit (the server's max_payload), and the object store chunks it for us. One object,
    overwritten: only the newest snapshot matters."""

    def __init__(self, store: object, name: str = SNAPSHOT_KEY) -> None:
        self._store = store
        self._name = name

    async def load(self) -> bytes | None:
        # into a buffer: without ``writeinto`` nats-py grows the result with ``bytes +=`` per 128 KB
        # chunk, quadratic in the size (at 26 MB, 60 % of a warm start's CPU, docs/benchmarks.md)
        buffer = io.BytesIO()
        try:
            await self._store.get(self._name, writeinto=buffer)  # type: ignore[attr-defined]
        except (ObjectNotFoundError, NotFoundError):
            return None
        return buffer.getvalue() or None

    async def save(self, data: bytes) -> None:
        await self._store.put(self._name, data)  # type: ignore[attr-defined]


class Projector:
    def __init__(
        self,
        store: EventStore,
        snapshots: SnapshotStore | None = None,
        *,
        snapshot_every: int = 50_000,
        snapshot_seconds: float = 60.0,
        state: ClusterState | None = None,
        read_ahead: ReadAhead | None = None,
    ) -> None:
        self.store = store
        #: a large catch-up in ``load`` is read by a child process beside the fold (``read_ahead.py``)
        self.read_ahead = read_ahead
        self.snapshots = snapshots
        self.state = state if state is not None else ClusterState()
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self._before: list[BeforeListener] = []
        self._after: list[AfterListener] = []
        self._advanced = asyncio.Condition()
        self._since_snapshot = 0
        self._last_snapshot_at = time.monotonic()
        self._snapshot_task: asyncio.Task[int] | None = None
        self.loaded_from_snapshot = 0
        self.replayed = 0
        self.skipped: list[int] = []
        #: records no engine wrote (sequence, subject, why), the first ``KEEP_TAMPERED``
        self.tampered: list[tuple[int, str, str]] = []
        self._on_tamper: list[TamperListener] = []
        #: set when the log this projection follows cannot be trusted any more (a gap, the stream gone
        #: or replaced): the state stays as it was, and whoever serves it (the engine, its query
        #: service) should say so rather than answer from it
        self.untrusted: LogIntegrityError | None = None

    def listen(self, before: BeforeListener, after: AfterListener) -> None:
        self._before.append(before)
        self._after.append(after)

    def on_tamper(self, listener: TamperListener) -> None:
        self._on_tamper.append(listener)

    @property
    def seq(self) -> int:
        return self.state.seq

    async def load(self, *, use_snapshot: bool = True, end_seq: int | None = None) -> None:
        """Snapshot (if any) + replay of the tail up to the current end of the log (or ``end_seq``)."""
        if use_snapshot and self.snapshots is not None:
            data = None
            try:
                data = await self.snapshots.load()
            except DsctlError as err:
                log.warning("projector.snapshot_unavailable", error=str(err))
            if data is not None:
                try:
                    self.state = snapshot.load(data)
                    self.loaded_from_snapshot = self.state.seq
                except MalformedEvent as err:
                    log.warning("projector.snapshot_ignored", error=str(err))
        end = await self.store.last_seq()
        if self.loaded_from_snapshot:
            await self._check_snapshot_against(end)
        if end_seq is not None:
            end = min(end, end_seq)
        start = self.state.seq + 1
        ahead = self.read_ahead
        if ahead is not None and ahead.worth_it(start, end) and isinstance(self.store, IdentifiedStore):
            await self._load_ahead(ahead, self.store, start, end)
            start = self.state.seq + 1
        await self._replay(start, end)
        log.info(
            "projector.loaded",
            seq=self.state.seq,
            snapshot_seq=self.loaded_from_snapshot,
            replayed=self.replayed,
        )

    async def _load_ahead(self, read_ahead: ReadAhead, store: IdentifiedStore, start: int, end: int) -> None:
        """Fold ``start..end``, most of it as read by a child process: the same events the store's read
        gives (same decoding, same checks). The first ``head_events`` are read here while the child
        starts. A child that stops short leaves the state at the last event folded, and ``load`` reads
        the rest in-process; a stream found gone or replaced raises as it would here."""
        identity = await store.identity()
        head = start + read_ahead.head_events - 1
        if head >= end:
            await self._replay(start, end)
            return
        proc = await read_ahead.spawn(identity.stream, head + 1, end, expect_created=identity.created)
        try:
            await self._replay(start, head)
            if self.state.seq != head:
                return  # the head did not reach its end (a shorter log?): the rest in-process
            batches = read_ahead.batches(identity.stream, head + 1, end, proc=proc)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    for seq, subject, time_ns, data in batch:
                        try:
                            stored = decode_stored(seq, subject, time_from_ns(time_ns), data)
                        except MalformedStoredEvent as err:
                            self._skip(err)
                            continue
                        self._fold(stored)
                        self.replayed += 1
        except ReadAheadFailed as err:
            log.warning("projector.read_ahead_failed", seq=self.state.seq, error=str(err))
        finally:
            await read_ahead.stop(proc)

    async def _replay(self, start: int, end: int) -> None:
        """Fold ``start..end`` read in-process, passing over records that do not decode."""
        while start <= end:
            try:
                async with contextlib.aclosing(self.store.read(start_seq=start, end_seq=end)) as events:
                    async for stored in events:
                        self._fold(stored)
                        self.replayed += 1
                break
            except MalformedStoredEvent as err:
                self._skip(err)
                start = err.seq + 1

    async def _check_snapshot_against(self, end: int) -> None:
        """The stream must still be the one the snapshot was folded from: long enough, and holding the
        snapshot's last record where the snapshot says (a stream deleted and made anew, even with as
        many messages, holds other ids)."""
        seq = self.state.seq
        if seq > end:
            raise LogIntegrityError(
                f"the snapshot covers the log up to sequence {seq}, but the stream ends at {end}: "
                "the event stream was replaced or lost events",
                "log_behind_snapshot",
            )
        if not self.state.last_id:
            return
        try:
            there = (await self.store.get(seq)).envelope.id
        except MalformedStoredEvent:
            there = "(a record that does not decode)"
        except NotFound as err:
            there = f"(nothing: {err})"
        except DsctlError as err:
            if isinstance(err, LogIntegrityError):
                raise
            # not an answer about the record (a timeout, a refused read): the check is skipped, not failed
            log.warning("projector.snapshot_unchecked", seq=seq, error=str(err))
            return
        if there != self.state.last_id:
            raise LogIntegrityError(
                f"the snapshot ends with event {self.state.last_id} at sequence {seq}, but the stream "
                f"holds {there} there: the event stream was replaced",
                "stream_replaced",
            )

    def _skip(self, err: MalformedStoredEvent) -> None:
        self._check_next(err.seq)
        if on_tree(err.subject):
            self._tamper(err.seq, err.subject, f"a record that does not decode: {err}")
        else:
            log.error("projector.skipped_malformed", seq=err.seq, subject=err.subject, error=str(err))
        self.skipped.append(err.seq)
        self.state.seq = max(self.state.seq, err.seq)
        self.state.last_id = ""

    def _tamper(self, seq: int, subject: str, why: str) -> None:
        log.error("projector.tamper", seq=seq, subject=subject, why=why)
        if len(self.tampered) < KEEP_TAMPERED:
            self.tampered.append((seq, subject, why))
        for listener in self._on_tamper:
            listener(seq, subject, why)

    def _check_next(self, seq: int) -> None:
        """The fold reads the whole log: each sequence must follow the last one folded."""
        if seq != self.state.seq + 1:
            raise LogIntegrityError(
                f"sequence gap: the log holds {seq} after {self.state.seq}; "
                f"{seq - self.state.seq - 1} message(s) are missing from the event stream",
                "sequence_gap",
            )

    def _fold(self, stored: StoredEvent) -> None:
        seq = stored.seq
        state = self.state
        if seq <= state.seq:
            return
        if seq != state.seq + 1:
            self._check_next(seq)
        envelope = stored.envelope
        subject = stored.subject
        # what follows runs for every event of a replay: exact-type checks (``isinstance`` against a
        # union of msgspec Structs costs a few hundred ns) and no listener work when there are none
        if type(envelope.data) in _TREE_RECORDS or on_tree(subject):
            problem = misplaced(subject, envelope)
            if problem is not None:
                self._tamper(seq, subject, problem)
                state.seq = seq
                state.last_id = envelope.id
                return
            why = refusal(state.authority, envelope)
            if why is not None:
                apply(state, envelope, seq)  # counted and passed over by the fold
                self._tamper(seq, subject, why)
                return
        if self._before:
            contexts = [b(state, stored) for b in self._before]
            apply(state, envelope, seq)
            for after, ctx in zip(self._after, contexts, strict=True):
                after(state, stored, ctx)
        else:
            apply(state, envelope, seq)
        self._since_snapshot += 1

    async def run(self) -> None:
        """Follow the tail forever (until cancelled, or ``LogIntegrityError``, also kept in
        ``untrusted``)."""
        try:
            while True:
                try:
                    async with contextlib.aclosing(self.store.follow(self.state.seq + 1)) as events:
                        async for stored in events:
                            self._fold(stored)
                            await self._notify()
                            self._maybe_snapshot()
                except MalformedStoredEvent as err:
                    self._skip(err)
                    await self._notify()
        except LogIntegrityError as err:
            self.untrusted = self.untrusted or err
            raise
        finally:
            if self._snapshot_task is not None:
                self._snapshot_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._snapshot_task

    async def _notify(self) -> None:
        async with self._advanced:
            self._advanced.notify_all()

    async def wait_for(self, seq: int, timeout: float = 10.0) -> bool:
        """Wait until the state covers ``seq`` (read-your-writes after an append)."""
        if self.state.seq >= seq:
            return True
        try:
            async with asyncio.timeout(timeout), self._advanced:
                await self._advanced.wait_for(lambda: self.state.seq >= seq)
        except TimeoutError:
            return False
        return True

    def _maybe_snapshot(self) -> None:
        if self.snapshots is None or (self._snapshot_task is not None and not self._snapshot_task.done()):
            return
        due = self._since_snapshot >= self.snapshot_every or (
            self._since_snapshot > 0 and time.monotonic() - self._last_snapshot_at >= self.snapshot_seconds
        )
        if due:
            self._snapshot_task = asyncio.ensure_future(self.save_snapshot())

    async def save_snapshot(self) -> int:
        """Write a snapshot of the current state now; returns the sequence it covers."""
        if self.snapshots is None:
            return 0
        data = snapshot.dump(self.state)  # synchronous: the state cannot change under the encoder
        seq = self.state.seq
        self._since_snapshot = 0
        self._last_snapshot_at = time.monotonic()
        try:
            await self.snapshots.save(data)
        except Exception as err:
            log.warning("projector.snapshot_failed", seq=seq, error=str(err))
            return 0
        log.info("projector.snapshot", seq=seq, bytes=len(data))
        return seq
