"""Replay, explain and audit: answering "why does the fleet look like this?" from the log alone.

- ``replay verify`` recomputes every recorded decision from the state just before it (the state at its
  ``state_seq``, with its ``now``) and reports any that differ. It works because the core is a pure
  function of (state, key, now) and every input is in the log.
- ``explain pod`` follows one pod's chain: the inputs in effect when it was decided, the decision and
  its reason for that node, the command, and every report its executor sent.
- ``explain node`` checks every placement rule of one DaemonSet against one node, now.
- ``audit`` lists events in log order, filtered by subject on the server wherever possible.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from typing import Any, Literal, TextIO

import msgspec

from engine.core.eligibility import node_should_run
from engine.core.reconcile import reconcile, reconcile_nodes
from engine.shell.queries import load_state, readable
from engine.shell.store import EventStore, StoredEvent
from events.errors import InvalidInput, NotFound
from events.subjects import PREFIX, daemonset_filters, node_filters, pod_filters, token, type_filter
from events.types import BY_TAG, CreatePod, DecisionRecorded, Event, PodCreated, PodEvent
from projections.fold import apply
from projections.model import ClusterState

# --- replay verify --------------------------------------------------------------------------------


class Mismatch(msgspec.Struct, frozen=True):
    seq: int
    key: str
    field: str
    recorded: Any
    recomputed: Any


_COMPARED = ("commands", "reasons", "status", "requeue_after_seconds", "backoffs", "adopted", "released",
             "generation", "template_hash", "uid", "scope")  # fmt: skip


def compare(seq: int, recorded: DecisionRecorded, recomputed: DecisionRecorded | None) -> Mismatch | None:
    key = f"{recorded.namespace}/{recorded.name}"
    if recomputed is None:
        return Mismatch(seq, key, "decision", "recorded", "no decision was due")
    for name in _COMPARED:
        # compared as JSON values: a recorded decision was decoded from the wire (lists), a recomputed
        # one may hold tuples inside raw pod specs; the wire form is what was recorded
        a, b = _as_json(getattr(recorded, name)), _as_json(getattr(recomputed, name))
        if a != b:
            path, va, vb = _first_difference(a, b, name)
            return Mismatch(seq, key, path, va, vb)
    return None


def _as_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any]:
    """The path of the first place two JSON values differ, and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path, a, b


class VerifyReport(msgspec.Struct, kw_only=True):
    checked: int = 0
    mismatches: list[Mismatch] = []
    skipped_malformed: list[int] = []
    first_seq: int = 0
    last_seq: int = 0
    seconds: float = 0.0


async def verify(store: EventStore, from_seq: int = 1) -> VerifyReport:
    started = time.perf_counter()
    report = VerifyReport()
    decisions: dict[int, list[tuple[int, DecisionRecorded]]] = {}
    async for stored in readable(store, [f"{PREFIX}.decision.*.*"], []):
        d = stored.envelope.data
        if isinstance(d, DecisionRecorded) and stored.seq >= from_seq:
            decisions.setdefault(d.state_seq, []).append((stored.seq, d))
    state = ClusterState()

    def check_at(k: int) -> None:
        for seq, recorded in decisions.pop(k, ()):
            key, at = f"{recorded.namespace}/{recorded.name}", recorded.now.timestamp()
            if recorded.scope:
                scoped = reconcile_nodes(state, key, list(recorded.scope), at)
                recomputed = scoped.decision if scoped is not None else None
            else:
                recomputed = reconcile(state, key, at).decision
            mismatch = compare(seq, recorded, recomputed)
            report.checked += 1
            report.first_seq = report.first_seq or seq
            report.last_seq = seq
            if mismatch is not None:
                report.mismatches.append(mismatch)

    check_at(0)
    skipped = report.skipped_malformed
    async for stored in readable(store, None, skipped):
        for k in [k for k in skipped if k > state.seq]:  # the engine's state also moved past them
            state.seq = k
            check_at(k)
        apply(state, stored.envelope, stored.seq)
        check_at(stored.seq)
    for k in sorted(decisions):  # a state_seq that names no stored event: unverifiable, so a mismatch
        for seq, recorded in decisions[k]:
            report.checked += 1
            report.mismatches.append(
                Mismatch(
                    seq, f"{recorded.namespace}/{recorded.name}", "state_seq", k, "no such event in the log"
                )
            )
    report.seconds = time.perf_counter() - started
    return report


def print_verify(report: VerifyReport, out: TextIO) -> int:
    for m in report.mismatches:
        out.write(
            f"MISMATCH decision at seq {m.seq} ({m.key}): {m.field} differs\n"
            f"  recorded:   {json.dumps(m.recorded, default=str)[:400]}\n"
            f"  recomputed: {json.dumps(m.recomputed, default=str)[:400]}\n"
        )
    if report.skipped_malformed:
        out.write(
            f"skipped {len(report.skipped_malformed)} malformed events: {report.skipped_malformed[:10]}\n"
        )
    verdict = "all match" if not report.mismatches else f"{len(report.mismatches)} differ"
    out.write(
        f"verified {report.checked} decisions (seq {report.first_seq}..{report.last_seq}) "
        f"in {report.seconds:.2f}s: {verdict}\n"
    )
    return 0 if not report.mismatches else 1


# --- explain --------------------------------------------------------------------------------------


def _when(stored: StoredEvent) -> str:
    return stored.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _line(stored: StoredEvent, text: str) -> str:
    return f"  [seq {stored.seq} {_when(stored)} {stored.envelope.source}] {text}"


async def _events(store: EventStore, subjects: list[str], end_seq: int | None = None) -> list[StoredEvent]:
    out = []
    async with contextlib.aclosing(store.read(subjects=subjects, end_seq=end_seq)) as events:
        async for stored in events:
            out.append(stored)
    return out


def summarize(event: Event) -> str:
    """One line per event for explain and audit."""
    match event:
        case DecisionRecorded():
            acts = [f"{type(c).__name__} {c.pod_name} on {c.node}" for c in event.commands]
            st = event.status
            return (
                f"decision for {event.namespace}/{event.name} gen {event.generation} "
                f"({len(event.commands)} commands{': ' + '; '.join(acts[:4]) if acts else ''}"
                f"{' …' if len(acts) > 4 else ''}) status desired={st.desired_number_scheduled} "
                f"ready={st.number_ready} updated={st.updated_number_scheduled}"
            )
        case PodEvent():
            extra = getattr(event, "reason", "")
            return (
                f"{event.TAG} {event.namespace}/{event.name} on {event.node}{': ' + extra if extra else ''}"
            )
    fields = msgspec.to_builtins(event)
    name = fields.pop("name", "")
    ns = fields.pop("namespace", "")
    fields.pop("spec", None)
    detail = json.dumps(fields, sort_keys=True)[:160] if fields else ""
    return f"{event.TAG} {ns + '/' if ns else ''}{name} {detail}".rstrip()


async def explain_pod(store: EventStore, name: str, namespace: str, out: TextIO) -> int:
    subject = f"{PREFIX}.pod.*.{token(namespace)}.{token(name)}.>"
    reports = await _events(store, [subject])
    created = next((s for s in reports if isinstance(s.envelope.data, PodCreated)), None)
    if created is None:
        raise NotFound(f'pods "{name}" not found in namespace {namespace} (no pod.created in the log)')
    pod = created.envelope.data
    assert isinstance(pod, PodCreated)
    out.write(f"pod {namespace}/{name} on node {pod.node}\n")
    decision_stored: StoredEvent | None = None
    decision: DecisionRecorded | None = None
    if pod.owner_name:
        for stored in await _events(store, [f"{PREFIX}.decision.{token(namespace)}.{token(pod.owner_name)}"]):
            d = stored.envelope.data
            if isinstance(d, DecisionRecorded) and any(c.id == pod.command_id for c in d.commands):
                decision_stored, decision = stored, d
                break
    if decision is None or decision_stored is None:
        out.write("\nno decision in the log created this pod (created outside the engine, or adopted)\n")
    else:
        k = decision.state_seq
        out.write(f"\n1. Inputs in effect when it was decided (state at seq {k}):\n")
        ds_events = await _events(store, daemonset_filters(namespace, pod.owner_name)[:1], end_seq=k)
        applied = [s for s in ds_events if s.envelope.type == "daemonset.applied"]
        if applied:
            last = applied[-1]
            out.write(_line(last, f"daemonset {namespace}/{pod.owner_name} applied, generation "
                                  f"{getattr(last.envelope.data, 'generation', '?')}, template "
                                  f"{getattr(last.envelope.data, 'template_hash', '?')}") + "\n")  # fmt: skip
        for s in (await _events(store, node_filters(pod.node)[:1], end_seq=k))[-5:]:
            out.write(_line(s, summarize(s.envelope.data)) + "\n")
        reason = next((r for r in decision.reasons if r.node == pod.node and r.pod == name), None)
        reason = reason or next((r for r in decision.reasons if r.node == pod.node), None)
        out.write(f"\n2. Decision (seq {decision_stored.seq}, leader {decision.leader or '?'}, "
                  f"now {decision.now.isoformat()}):\n")  # fmt: skip
        if reason is not None:
            out.write(f"  node {reason.node}: {reason.action} — {reason.message} [{reason.code}]\n")
        cmd = next(c for c in decision.commands if c.id == pod.command_id)
        out.write(f"\n3. Command {cmd.id}: {type(cmd).__name__} {cmd.pod_name} on {cmd.node}")
        if isinstance(cmd, CreatePod):
            out.write(f" (revision {cmd.revision_hash})")
        out.write("\n")
    out.write("\n4. Executor reports:\n")
    for s in reports:
        out.write(_line(s, summarize(s.envelope.data)) + "\n")
    # later decisions about this pod (its deletion), if any
    if pod.owner_name:
        later = [
            (s, r)
            for s in await _events(store, [f"{PREFIX}.decision.{token(namespace)}.{token(pod.owner_name)}"])
            if isinstance(s.envelope.data, DecisionRecorded) and s.seq > created.seq
            for r in s.envelope.data.reasons
            if r.pod == name and r.action in ("delete", "evict")
        ]
        if later:
            out.write("\n5. Later decisions about it:\n")
            for s, r in later:
                out.write(_line(s, f"{r.action} — {r.message} [{r.code}]") + "\n")
    return 0


def state_clock(state: ClusterState, at: int | datetime | None) -> float:
    """The ``now`` to judge a state by: the wall clock for the present, but for a state ``--at`` the
    past its own time, or timers (commands in flight, backoffs, minReadySeconds) would be judged by
    today and the past explained as it never was. The state's own time is that of the last event folded
    into it (``occurred_at``), for ``--at SEQ`` and ``--at TIME`` alike: it is the clock every timer in
    the state was set by (``--at TIME`` picks events by the store's clock, which may differ), and the
    one a replay of the engine reads."""
    if at is None:
        return time.time()
    return state.last_time


async def explain_node(
    store: EventStore, nc: Any, node: str, ds_ref: str, out: TextIO, *, at: int | datetime | None = None
) -> int:
    ns, sep, name = ds_ref.partition("/")
    if not sep:
        ns, name = "default", ds_ref
    state = await load_state(store, nc, at)
    n = state.nodes.get(node)
    if n is None:
        raise NotFound(f'nodes "{node}" not found')
    ds = state.daemonsets.get(f"{ns}/{name}")
    if ds is None:
        raise NotFound(f'daemonsets.apps "{name}" not found in namespace {ns}')
    e = node_should_run(n, ds.spec.template)
    out.write(f"daemonset {ns}/{name} on node {node} (log seq {state.seq}):\n")
    for check in e.checks:
        out.write(f"  {'PASS' if check.passed else 'FAIL'}  {check.rule:<13} {check.message}\n")
    verdict = (
        "runs here"
        if e.should_run
        else "may keep a pod here but not start one"
        if e.should_continue_running
        else "does not run here"
    )
    out.write(f"shouldRun={str(e.should_run).lower()} shouldContinueRunning="
              f"{str(e.should_continue_running).lower()}: {verdict}")  # fmt: skip
    if not e.should_run:
        out.write(f" — first failed rule: {e.message} [{e.code}]")
    out.write("\n")
    pods = [
        state.pods[k] for k in sorted(state.pods_by_node.get(node, ())) if state.pods[k].owner_uid == ds.uid
    ]
    for p in pods:
        out.write(f"pod {p.name}: phase {p.phase}, ready {str(p.ready).lower()}, revision {p.revision_hash}"
                  f"{', terminating' if p.deletion_timestamp else ''}\n")  # fmt: skip
    if not pods:
        out.write("no pod of this daemonset on the node\n")
    result = reconcile(state, ds.key, state_clock(state, at))
    for r in result.reasons:
        if r.node == node:
            out.write(f"the engine now: {r.action} — {r.message} [{r.code}]\n")
    return 0


# --- audit ----------------------------------------------------------------------------------------


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
        ns, sep, name = f.ds.partition("/")
        ns, name = (ns, name) if sep else ("default", f.ds)
        candidates.append(daemonset_filters(ns, name))
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
    merged = [p for p in (_intersect_all(c) for c in _product(candidates)) if p is not None]
    return (merged or ["__nothing__"]), False


def _product(groups: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for g in groups:
        out = [[*prefix, x] for prefix in out for x in g]
    return out


def _intersect_all(patterns: list[str]) -> str | None:
    acc: str | None = patterns[0]
    for p in patterns[1:]:
        if acc is None:
            return None
        acc = _intersect(acc, p)
    return acc


def _intersect(a: str, b: str) -> str | None:
    """The subject pattern matching exactly what both NATS patterns match (None if nothing)."""
    ta, tb = a.split("."), b.split(".")
    out: list[str] = []
    i = 0
    while True:
        ea, eb = i >= len(ta), i >= len(tb)
        if ea and eb:
            return ".".join(out)
        x = ta[i] if not ea else None
        y = tb[i] if not eb else None
        if x == ">":  # one or more tokens: whatever b still has (if it has any)
            return None if eb else ".".join(out + tb[i:])
        if y == ">":
            return None if ea else ".".join(out + ta[i:])
        if x is None or y is None:
            return None
        if x == "*":
            out.append(y)
        elif y == "*" or x == y:
            out.append(x)
        else:
            return None
        i += 1


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
        from engine.shell.present import table

        body = [
            [str(r.seq), _when(r), r.envelope.type, r.envelope.source, summarize(r.envelope.data)]
            for r in rows
        ]
        out.write(table(["SEQ", "TIME", "TYPE", "SOURCE", "SUMMARY"], body))
    return 0
