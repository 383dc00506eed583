"""The decision timeline: every decision of the log summarised in memory, newest first, filtered and
paged by sequence (docs/console.md, "Decision timeline").

A decision record can be 100 KB at fleet scale; a summary is a few numbers, so a million-event log's
decisions fit in a few tens of MB and a page is a slice. The follower reads ``dse.decision.>`` only
(the server filters) from the start, then follows; it also feeds a ``DecisionIndex`` so the timeline
filters by node exactly as ``audit --node`` does. Paging uses a sequence cursor (``before``), so new
decisions arriving at the top never shift the page a person is reading.

Outcome (the colour, always shown with its word): ``failed`` when a reason concerns a failed pod or a
back-off, ``acted`` when commands were sent, ``waiting`` when only waits were recorded, ``noop``
otherwise.
"""

from __future__ import annotations

import bisect
import contextlib
from typing import Any

import msgspec
import structlog

from engine.query.index import DecisionIndex
from engine.store.event_store import EventStore, MalformedStoredEvent
from events.subjects import DECISION_TREE
from events.types import CreatePod, DecisionRecorded, DeletePod, EvictPod

log = structlog.get_logger("dsctl.console")

FAILURE_CODES = frozenset({"FailedDaemonPod", "FailedPodBackoff", "ReplaceFailedPodAtItsRevision"})
OUTCOMES = ("failed", "acted", "waiting", "noop")


class Summary(msgspec.Struct, array_like=True):
    seq: int
    time: float
    ds: str
    outcome: str
    creates: int
    deletes: int
    waits: int
    nodes: int
    leader: str


def summarise(seq: int, time: float, d: DecisionRecorded) -> Summary:
    creates = sum(isinstance(c, CreatePod) for c in d.commands)
    deletes = sum(isinstance(c, DeletePod | EvictPod) for c in d.commands)
    waits = sum(r.action == "wait" for r in d.reasons)
    if any(r.code in FAILURE_CODES for r in d.reasons):
        outcome = "failed"
    elif d.commands:
        outcome = "acted"
    elif waits:
        outcome = "waiting"
    else:
        outcome = "noop"
    nodes = len({r.node for r in d.reasons if r.node} | {c.node for c in d.commands})
    return Summary(seq, time, f"{d.namespace}/{d.name}", outcome, creates, deletes, waits, nodes, d.leader)


class Timeline:
    def __init__(self, store: EventStore, index: DecisionIndex | None = None) -> None:
        """``index``: a decision index kept by someone else (the query service beside the same
        engine), used for the node filter instead of keeping a second one."""
        self._store = store
        self._items: list[Summary] = []
        self._seqs: list[int] = []
        self._own_index = index is None
        self.index = index if index is not None else DecisionIndex(store)

    def add(self, seq: int, time: float, d: DecisionRecorded) -> None:
        if self._seqs and seq <= self._seqs[-1]:
            return
        self._items.append(summarise(seq, time, d))
        self._seqs.append(seq)
        if self._own_index:
            self.index.add(seq, d)

    async def run(self) -> None:
        start = 1
        while True:
            try:
                events = self._store.follow(start, [DECISION_TREE])
                async with contextlib.aclosing(events):
                    async for stored in events:
                        if isinstance(stored.envelope.data, DecisionRecorded):
                            self.add(stored.seq, stored.time.timestamp(), stored.envelope.data)
                        if self._own_index:
                            self.index.covered = stored.seq
                        start = stored.seq + 1
            except MalformedStoredEvent as err:
                log.warning("console.timeline_skipped", seq=err.seq, error=str(err))
                start = err.seq + 1

    @property
    def last_seq(self) -> int:
        return self._seqs[-1] if self._seqs else 0

    def page(
        self,
        *,
        before: int | None = None,
        at: int | None = None,
        limit: int = 50,
        ds: str = "",
        node: str = "",
        outcome: str = "",
        failures: bool = False,
    ) -> dict[str, Any]:
        """Newest first, older than ``before`` (and at or before ``at``, for time travel)."""
        limit = max(1, min(limit, 500))
        top = before if before is not None else (at + 1 if at is not None else None)
        if at is not None and top is not None:
            top = min(top, at + 1)
        end = len(self._seqs) if top is None else bisect.bisect_left(self._seqs, top)
        allowed = set(self.index.lookup(node)) if node else None
        picked: list[Summary] = []
        i = end - 1
        while i >= 0 and len(picked) < limit + 1:
            s = self._items[i]
            i -= 1
            if ds and s.ds != ds:
                continue
            if allowed is not None and s.seq not in allowed:
                continue
            if failures and s.outcome != "failed":
                continue
            if outcome and s.outcome != outcome:
                continue
            picked.append(s)
        more = len(picked) > limit
        picked = picked[:limit]
        return {
            "items": [msgspec.structs.asdict(s) for s in picked],
            "next": picked[-1].seq if more and picked else None,
            "total": len(self._items),
            "daemonsets": sorted({s.ds for s in self._items}),
            "outcomes": list(OUTCOMES),
        }
