"""``dsctl audit``: events and decisions in log order, filtered by DaemonSet, node, pod, type and time.

Filtering happens on the server wherever the filters can say it: each dimension is a set of subject
filters (``events.subjects``), and several dimensions are intersected token by token into filters that
match exactly what all of them match, so the store sends only the events asked for.

``--node X`` also lists the decisions whose per-node reasons or commands name X. Decisions are recorded
on their DaemonSet's subject, which no filter on X can select, so they come from the engine's decision
index when a query service answers (``engine.query.index``: the sequences, fetched one by one, then the
decision tree after what the index has read), and otherwise from a scan of every decision in the log
(docs/console.md, "Audit by node"). Either way the list is complete, in log order among the facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any, Literal, TextIO

import msgspec

from engine.cli.present import log_time, summarize, table
from engine.cli.remote import ask, service_wanted
from engine.core.arguments import parse_namespaced
from engine.query.index import nodes_named
from engine.query.protocol import AUDIT
from engine.store.event_store import EventStore, StoredEvent
from events.errors import InvalidInput
from events.subjects import (
    DECISION_TREE,
    daemonset_filters,
    decision_subject,
    intersect_groups,
    node_filters,
    pod_filters,
    type_filter,
)
from events.types import BY_TAG, DecisionRecorded

#: decisions fetched at once by sequence (each a round trip to the stream leader)
FETCH_BATCH = 64


class AuditFilter(msgspec.Struct, kw_only=True):
    ds: str | None = None
    node: str | None = None
    pod: str | None = None
    types: list[str] = []
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


def audit_subjects(f: AuditFilter) -> tuple[list[str] | None, bool]:
    """Server-side subject filters for ``f``, and whether more filtering is left for the client."""
    for t in f.types:
        if t not in BY_TAG:
            raise InvalidInput(f"unknown event type {t!r} (known: {', '.join(sorted(BY_TAG))})", "--type")
    candidates: list[list[str]] = []
    if f.ds:
        candidates.append(daemonset_filters(*parse_namespaced(f.ds)))
    if f.node:
        candidates.append(node_filters(f.node))
    if f.pod:
        candidates.append(pod_filters(f.pod))
    if f.types:
        candidates.append([type_filter(t) for t in f.types])
    if not candidates:
        return None, False
    if len(candidates) == 1:
        return candidates[0], False
    # several dimensions: intersect them token by token where possible, else filter the rest client-side
    return (intersect_groups(candidates) or ["__nothing__"]), False


def audit_record(stored: StoredEvent) -> dict[str, Any]:
    return {
        "seq": stored.seq,
        "time": stored.time.isoformat(),
        "subject": stored.subject,
        "type": stored.envelope.type,
        "id": stored.envelope.id,
        "source": stored.envelope.source,
        "causation_id": stored.envelope.causation_id,
        "correlation_id": stored.envelope.correlation_id,
        "data": msgspec.to_builtins(stored.envelope.data),
    }


def wants_decisions(f: AuditFilter) -> bool:
    """``--node`` asks for the decisions naming the node too, unless the types leave them out (a pod
    filter narrows to one pod's reports, as before)."""
    return bool(f.node) and not f.pod and (not f.types or DecisionRecorded.TAG in f.types)


async def node_decisions(
    store: EventStore, nc: Any, f: AuditFilter, *, index: bool = True
) -> AsyncGenerator[StoredEvent, None]:
    """The decisions naming ``f.node`` (of ``f.ds`` when given), in log order, at or after ``f.since``."""
    assert f.node is not None
    node = f.node
    tree = decision_subject(*parse_namespaced(f.ds)) if f.ds else DECISION_TREE
    seqs: list[int] = []
    tail_from = 1
    if index and nc is not None and service_wanted():
        reply = await ask(nc, AUDIT, {"node": node}, 0)
        if reply is not None and not reply.unavailable:
            seqs, tail_from = reply.seqs, reply.covered + 1

    def keep(stored: StoredEvent) -> bool:
        d = stored.envelope.data
        return (
            isinstance(d, DecisionRecorded)
            and (f.since is None or stored.time >= f.since)
            and (not f.ds or stored.subject == tree)
            and node in nodes_named(d)
        )

    for i in range(0, len(seqs), FETCH_BATCH):
        for stored in await asyncio.gather(*(store.get(s) for s in seqs[i : i + FETCH_BATCH])):
            if keep(stored):
                yield stored
    # the tail the index has not read (all of the decision tree without an index)
    start_time = f.since if tail_from == 1 else None
    events = store.read(start_seq=tail_from, start_time=start_time, subjects=[tree])
    async with contextlib.aclosing(events):
        async for stored in events:
            if keep(stored):
                yield stored


async def _merged(
    a: AsyncGenerator[StoredEvent, None], b: AsyncGenerator[StoredEvent, None]
) -> AsyncGenerator[StoredEvent, None]:
    """Two streams in sequence order, as one (both closed with it: they hold consumers)."""
    try:
        x = await anext(a, None)
        y = await anext(b, None)
        while x is not None or y is not None:
            if y is None or (x is not None and x.seq < y.seq):
                assert x is not None
                yield x
                x = await anext(a, None)
            else:
                yield y
                y = await anext(b, None)
    finally:
        await a.aclose()
        await b.aclose()


async def audit(
    store: EventStore,
    f: AuditFilter,
    fmt: Literal["table", "json", "jsonl"],
    out: TextIO,
    nc: Any = None,
    *,
    decisions: bool | None = None,
    index: bool = True,
) -> int:
    """``nc``: where to ask for the decision index (with no engine answering, the decisions are
    scanned); ``decisions``: list a node's decisions (by default when ``nc`` is given, as the CLI gives
    it); ``index=False`` scans even when an engine answers (to compare)."""
    subjects, _ = audit_subjects(f)
    rows: list[StoredEvent] = []
    stream: AsyncGenerator[StoredEvent, None] = store.read(start_time=f.since, subjects=subjects)
    if (nc is not None if decisions is None else decisions) and wants_decisions(f):
        stream = _merged(stream, node_decisions(store, nc, f, index=index))
    async with contextlib.aclosing(stream) as events:
        async for stored in events:
            if f.until is not None and stored.time > f.until:
                break
            rows.append(stored)
            if fmt == "jsonl":
                out.write(json.dumps(audit_record(stored)) + "\n")
            if f.limit is not None and len(rows) >= f.limit:
                break
    if fmt == "json":
        out.write(json.dumps([audit_record(s) for s in rows], indent=2) + "\n")
    elif fmt == "table":
        body = [
            [str(r.seq), log_time(r.time), r.envelope.type, r.envelope.source, summarize(r.envelope.data)]
            for r in rows
        ]
        out.write(table(["SEQ", "TIME", "TYPE", "SOURCE", "SUMMARY"], body))
    return 0
