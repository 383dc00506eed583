"""The leader's decision writer: decisions appended one at a time, each fenced on the decision tree.

A new leader first appends ``leader.elected`` on ``dse.decision._leader``; every decision is appended
with ``Nats-Expected-Last-Subject-Sequence`` checked over ``dse.decision.>`` (docs/jetstream.md §1.1, §1.4),
so the next decision of a deposed leader fails and that engine stops reconciling (docs/design.md,
"Fencing on the decision subject tree"). The lease only decides who *tries*; the stream decides who
*succeeds*.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from engine.store.event_store import EventStore
from events.envelope import wrap
from events.errors import ConflictError, FencedOff
from events.ids import stable_id
from events.subjects import DECISION_TREE
from events.types import DecisionRecorded, LeaderElected

Clock = Callable[[], float]


class LeadershipLost(FencedOff):
    """A decision append was fenced off: another engine leads now.

    A ``FencedOff``, not a ``ConflictError``: a conflict means "re-read and retry now", and a deposed
    leader that retried would only be refused again; it must stop (the controller steps down)."""


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
                # the expected sequence on the decision tree moved: another leader appended there
                self.tree_seq = None
                raise LeadershipLost(
                    f"decision for {decision.namespace}/{decision.name} fenced: {err}"
                ) from err
            self.tree_seq = max(self.tree_seq, result.seq)
            if self.on_appended is not None and not result.duplicate:
                self.on_appended(result.seq, decision)
            return result.seq
