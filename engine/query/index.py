"""Which decisions name a node: the index behind ``dsctl audit --node`` (docs/console.md, "Audit by
node").

A decision is recorded on its DaemonSet's subject (``dse.decision.<ns>.<name>``: one subject per
DaemonSet, because the fencing checks the whole tree's last sequence), so a subject filter cannot find
the decisions about one node; without an index the audit reads every decision of the log. The index
follows ``dse.decision.>`` from the start of the log (the server filters, so it reads decisions only)
and keeps, per node, the sequences of the decisions whose per-node reasons or commands name it.

"Complete" is exact rather than hoped for: the index answers with the sequences it has and the last
sequence it has read (``covered``); the client reads the decision tree after ``covered`` itself, so a
decision appended a moment ago is never missing from an audit. What the index cannot know: a routine
reason summarised for more than 20 nodes (``engine/core/decision.py``) names only its first five
nodes; such a reason is "nothing to do here" and names no pod, and the index lists the decision only
for the nodes the record names, as a scan of the records would.
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array

import structlog

from engine.store.event_store import EventStore, MalformedStoredEvent
from events.subjects import DECISION_TREE
from events.types import DecisionRecorded

log = structlog.get_logger("dsctl.query.index")


def nodes_named(decision: DecisionRecorded) -> set[str]:
    """Every node a decision's per-node reasons or commands name (summaries name no node)."""
    named = {r.node for r in decision.reasons if r.node}
    named.update(c.node for c in decision.commands)
    return named


class DecisionIndex:
    """Node -> sequences of the decisions naming it, following the log (``run``)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._by_node: dict[str, array[int]] = {}
        #: the last stream sequence read on the decision tree (decisions at or below it are indexed)
        self.covered = 0
        self.decisions = 0
        #: set once the index has read the decisions that were in the log when it started
        self.caught_up = asyncio.Event()

    def add(self, seq: int, decision: DecisionRecorded) -> None:
        for node in nodes_named(decision):
            seqs = self._by_node.get(node)
            if seqs is None:
                seqs = self._by_node[node] = array("q")
            seqs.append(seq)
        self.decisions += 1

    def lookup(self, node: str) -> list[int]:
        return list(self._by_node.get(node, ()))

    async def run(self) -> None:
        """Read the decision tree up to the end of the log as it is now, then follow it (until
        cancelled). After the first read ``covered`` is the log's end then, not only its last decision:
        the tail a client reads itself starts there."""
        end = await self._store.last_seq()
        await self._each(1, end)
        self.covered = max(self.covered, end)
        self.caught_up.set()
        log.info("query.index_caught_up", decisions=self.decisions, seq=end)
        await self._each(end + 1, None)

    async def _each(self, start: int, end: int | None) -> None:
        while True:
            try:
                if end is None:
                    events = self._store.follow(start, [DECISION_TREE])
                else:
                    events = self._store.read(start_seq=start, end_seq=end, subjects=[DECISION_TREE])
                async with contextlib.aclosing(events):
                    async for stored in events:
                        if isinstance(stored.envelope.data, DecisionRecorded):
                            self.add(stored.seq, stored.envelope.data)
                        self.covered = stored.seq
                return
            except MalformedStoredEvent as err:  # not a decision anyone can audit: passed over
                log.warning("query.index_skipped", seq=err.seq, error=str(err))
                self.covered = err.seq
                start = err.seq + 1
