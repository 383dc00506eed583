"""The leader's decision writer: decisions appended one at a time, each fenced on the decision tree.

A new leader first appends ``leader.elected`` on ``dse.decision._leader``; every decision is appended
with ``Nats-Expected-Last-Subject-Sequence`` checked over ``dse.decision.>`` (docs/jetstream.md §1.1, §1.4),
so the next decision of a deposed leader fails and that engine stops reconciling (docs/design.md,
"Fencing on the decision subject tree"). The lease only decides who *tries*; the stream decides who
*succeeds*. Each decision's id names the sequence it was fenced on (``projections.authority.decision_id``),
which is how every reader of the log tells the leader's decisions from anyone else's.

A record on the tree that moves the fence is not always another leader (docs/design.md, "Tamper
evidence"): anyone able to publish there can append a forged marker, a forged decision or garbage. With
a ``guard`` (the engine renews its lease through it), a refused append, or ``check_fence``, reads what
was appended after this writer's last record, and:

- if this writer still holds the lease (renewed just now, so no other engine can have taken it), what
  was appended is no engine's: it is logged at error level and reported to ``on_tamper``, and the writer
  appends a marker of its own again (fenced on what it read), naming as its cause the id of its last
  genuine record, which disowns everything in between (``projections.authority.Disowning``); the
  decision is then appended on the new fence;
- otherwise another engine leads: ``LeadershipLost``, as before.

Without a guard (tests of the fence alone) any moved fence is ``LeadershipLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from engine.store.event_store import EventStore, MalformedStoredEvent, StoredEvent
from events.envelope import Envelope, wrap
from events.errors import ConflictError, FencedOff, TransientError
from events.ids import stable_id
from events.subjects import DECISION_TREE
from events.types import DecisionRecorded, LeaderElected
from projections.authority import decision_id, misplaced

log = structlog.get_logger("dsctl.fencing")

Clock = Callable[[], float]
#: renews the lease now: the revision held, or None when this engine no longer holds it
LeaseGuard = Callable[[], Awaitable[int | None]]
#: told of each record on the tree this writer found that no engine wrote: (sequence, subject, why)
TamperReport = Callable[[int, str, str], None]

#: how many records this writer remembers having sent (to tell its own from anyone else's)
REMEMBERED = 4096
#: re-fences one append may go through before it is given up for now (retried later by the caller)
MAX_REFENCES = 3


class LeadershipLost(FencedOff):
    """A decision append was fenced off: another engine leads now.

    A ``FencedOff``, not a ``ConflictError``: a conflict means "re-read and retry now", and a deposed
    leader that retried would only be refused again; it must stop (the controller steps down)."""


class DecisionWriter:
    """Appends the leader's decisions one at a time, each fenced on the decision subject tree."""

    def __init__(
        self,
        store: EventStore,
        holder: str,
        clock: Clock = time.time,
        *,
        guard: LeaseGuard | None = None,
        on_tamper: TamperReport | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self._clock = clock
        self.guard = guard
        self.on_tamper = on_tamper
        self.tree_seq: int | None = None
        #: the envelope id of this writer's last record on the tree (what a re-affirmation names)
        self.head_id = ""
        self.epoch = 0
        self._lock = asyncio.Lock()
        self._sent: OrderedDict[str, None] = OrderedDict()
        #: told of each decision stored, in log order (called while the append lock is held)
        self.on_appended: Callable[[int, DecisionRecorded], None] | None = None

    def wrote(self, envelope_id: str) -> bool:
        """Whether this writer sent a record with this id (lately: the last ``REMEMBERED``)."""
        return envelope_id in self._sent

    def _remember(self, envelope_id: str) -> None:
        self._sent[envelope_id] = None
        self._sent.move_to_end(envelope_id)
        while len(self._sent) > REMEMBERED:
            self._sent.popitem(last=False)

    def _marker(self, epoch: int, id: str, causation_id: str = "") -> Envelope:
        env = wrap(
            LeaderElected(holder=self.holder, epoch=epoch),
            id=id,
            occurred_at=datetime.fromtimestamp(self._clock(), UTC),
            source=self.holder,
            causation_id=causation_id,
        )
        self._remember(env.id)
        return env

    async def elect(self, epoch: int) -> int:
        """Record this engine's election; from here on a deposed leader's appends fail."""
        env = self._marker(epoch, stable_id("leader", self.holder, epoch))
        async with self._lock:
            result = await self.store.append(env)
            self.tree_seq, self.head_id, self.epoch = result.seq, env.id, epoch
        return result.seq

    async def append(self, decision: DecisionRecorded, *, causation_id: str = "") -> int:
        if self.tree_seq is None:
            raise LeadershipLost("not elected")
        async with self._lock:
            for attempt in range(MAX_REFENCES + 1):
                if self.tree_seq is None:
                    raise LeadershipLost("not elected")
                # made under the lock: the id names the very sequence the append is fenced on
                env = wrap(
                    decision,
                    id=decision_id(decision, self.tree_seq),
                    occurred_at=datetime.fromtimestamp(self._clock(), UTC),
                    source=self.holder,
                    causation_id=causation_id,
                )
                self._remember(env.id)
                try:
                    result = await self.store.append(
                        env,
                        expected_last_subject_seq=self.tree_seq,
                        expected_subject_filter=DECISION_TREE,
                    )
                except ConflictError as err:
                    # the expected sequence on the decision tree moved: another leader, or a forgery
                    what = f"decision for {decision.namespace}/{decision.name} fenced: {err}"
                    if self.guard is None or not await self._refence():
                        self.tree_seq = None
                        raise LeadershipLost(what) from err
                    if attempt == MAX_REFENCES:
                        raise TransientError(f"{what} (and again after {attempt} re-fences)") from err
                    continue
                self.tree_seq = max(self.tree_seq, result.seq)
                if not result.duplicate:
                    self.head_id = env.id
                if self.on_appended is not None and not result.duplicate:
                    self.on_appended(result.seq, decision)
                return result.seq
        raise AssertionError("unreachable")

    async def check_fence(self) -> None:
        """Look at the tree now (something not this writer's was folded there): re-fence over what no
        engine wrote, or raise ``LeadershipLost`` if another engine leads."""
        async with self._lock:
            if self.tree_seq is None:
                return
            if not await self._refence():
                self.tree_seq = None
                raise LeadershipLost("another engine's leader marker is on the decision tree")

    async def _refence(self) -> bool:
        """(Lock held.) What was appended after this writer's last record; True when the fence is this
        writer's again (nothing foreign, or re-fenced over it), False when another engine leads."""
        assert self.tree_seq is not None
        for _ in range(MAX_REFENCES):
            after = await self._tree_after(self.tree_seq)
            foreign: list[tuple[int, str, str]] = []
            for seq, subject, env, why in after:
                if not foreign and env is not None and self.wrote(env.id):
                    # ours, stored though its acknowledgement was lost: it is the head now
                    self.tree_seq, self.head_id = seq, env.id
                    continue
                foreign.append((seq, subject, why))
            if not foreign:
                return True
            if self.guard is None:
                return False
            revision = await self.guard()
            if revision is None:
                log.warning("fencing.deposed", holder=self.holder, after=self.tree_seq,
                            records=[f"{s}: {w}" for s, _, w in foreign][:5])  # fmt: skip
                return False
            for seq, subject, why in foreign:
                log.error(
                    "fencing.tamper",
                    seq=seq,
                    subject=subject,
                    why=why,
                    holder=self.holder,
                    lease_revision=revision,
                    verdict="no engine wrote it: this engine holds the lease; not acted on",
                )
                if self.on_tamper is not None:
                    self.on_tamper(seq, subject, why)
            last = foreign[-1][0]
            env = self._marker(
                revision, stable_id("leader", self.holder, revision, "reaffirm", last), self.head_id
            )
            try:
                result = await self.store.append(
                    env, expected_last_subject_seq=last, expected_subject_filter=DECISION_TREE
                )
            except ConflictError:
                continue  # more was appended meanwhile: read again
            log.warning(
                "fencing.reaffirmed", holder=self.holder, seq=result.seq, disowned=[s for s, _, _ in foreign]
            )
            self.tree_seq, self.head_id, self.epoch = result.seq, env.id, revision
            return True
        raise TransientError("the decision tree keeps moving under the leader's re-fence")

    async def _tree_after(self, seq: int) -> list[tuple[int, str, Envelope | None, str]]:
        """Every record on the tree after ``seq``: (sequence, subject, envelope or None if it does not
        decode, what it is)."""
        out: list[tuple[int, str, Envelope | None, str]] = []
        start = seq + 1
        while True:
            try:
                events = self.store.read(start_seq=start, subjects=[DECISION_TREE])
                async with contextlib.aclosing(events):
                    async for stored in events:
                        out.append((stored.seq, stored.subject, stored.envelope, _what(stored)))
                return out
            except MalformedStoredEvent as err:
                out.append((err.seq, err.subject, None, f"a record that does not decode: {err}"))
                start = err.seq + 1


def _what(stored: StoredEvent) -> str:
    env = stored.envelope
    problem = misplaced(stored.subject, env)
    if problem is not None:
        return problem
    data = env.data
    if isinstance(data, LeaderElected):
        return f"a leader marker for {data.holder!r} (epoch {data.epoch})"
    if isinstance(data, DecisionRecorded):
        return f"a decision for {data.namespace}/{data.name} by {env.source!r}"
    return f"a {env.type} event"
