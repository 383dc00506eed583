"""``dsctl audit``: events and decisions in log order, filtered by DaemonSet, node, pod, type and time.

Filtering happens on the server wherever the filters can say it: each dimension is a set of subject
filters (``events.subjects``), and several dimensions are intersected token by token into filters that
match exactly what all of them match, so the store sends only the events asked for.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any, Literal, TextIO

import msgspec

from engine.cli.present import log_time, summarize, table
from engine.core.arguments import parse_namespaced
from engine.store.event_store import EventStore, StoredEvent
from events.errors import InvalidInput
from events.subjects import daemonset_filters, intersect_groups, node_filters, pod_filters, type_filter
from events.types import BY_TAG


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


async def audit(
    store: EventStore, f: AuditFilter, fmt: Literal["table", "json", "jsonl"], out: TextIO
) -> int:
    subjects, _ = audit_subjects(f)
    rows: list[StoredEvent] = []
    async with contextlib.aclosing(store.read(start_time=f.since, subjects=subjects)) as events:
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
