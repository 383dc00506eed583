"""``replay verify``: recompute every recorded decision from the log alone, and audit its effects.

Each decision is recomputed from the state just before it (the state at its ``state_seq``, with its
``now``) and compared with what was recorded. It works because the core is a pure function of (state,
key, now) and every input is in the log. The effects audit (``engine.cli.effects``) checks that every
command of those decisions was answered by its executor, or is still inside its in-flight window, or was
superseded after it expired; anything else is an orphan (see ``verify``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import msgspec

from engine.cli.effects import Effect, Ledger, effect_line, effect_reason, look_for_sends
from engine.cli.queries import readable
from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.core.reconcile import reconcile, reconcile_nodes
from engine.store.event_store import EventStore, MalformedStoredEvent, StoredEvent
from events.subjects import DECISION_TREE, LEADER_SUBJECT, subject_for
from events.types import DecisionRecorded, LeaderElected, NodeRemoved, PodEvent
from projections.fold import apply
from projections.model import ClusterState, object_key


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


class IntegrityFailure(msgspec.Struct, frozen=True):
    """A record on the decision tree that is not what only the engine writes there."""

    seq: int
    subject: str
    reason: str


class VerifyReport(msgspec.Struct, kw_only=True):
    checked: int = 0
    mismatches: list[Mismatch] = []
    skipped_malformed: list[int] = []
    #: malformed or misplaced records on ``dse.decision.>``: integrity failures, never skips
    malformed_decisions: list[IntegrityFailure] = []
    first_seq: int = 0
    last_seq: int = 0
    #: the effects audit: commands recorded by the decisions checked, and what answered them
    commands: int = 0
    answered: int = 0
    answered_late: int = 0
    resolved_otherwise: int = 0
    in_flight: list[Effect] = []
    superseded: list[Effect] = []
    orphans: list[Effect] = []
    #: the instant the in-flight window is judged at: ``--now``, else the last event's ``occurred_at``
    judged_at: datetime | None = None
    judged_by: str = "the last event in the log"
    #: what the absence of a command from ``DSE_COMMANDS`` could prove
    sent_evidence: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.mismatches or self.orphans or self.malformed_decisions)


class _Decisions:
    """The recorded decisions, read a second time alongside the main pass and handed over when the
    fold reaches their ``state_seq``. Only the ones read ahead of that point are held (the distance
    between a decision and the state it was taken from), never all of them."""

    def __init__(self, store: EventStore, start: int, end: int) -> None:
        self._events = readable(store, [DECISION_TREE], [], start_seq=start, end_seq=end)
        self._ahead: dict[int, DecisionRecorded] = {}
        self._done = False

    async def take(self, seqs: list[int]) -> list[tuple[int, DecisionRecorded]]:
        out = []
        for seq in seqs:
            while seq not in self._ahead and not self._done:
                try:
                    stored = await anext(self._events)
                except StopAsyncIteration:
                    self._done = True
                    break
                if isinstance(stored.envelope.data, DecisionRecorded):
                    self._ahead[stored.seq] = stored.envelope.data
            if seq in self._ahead:
                out.append((seq, self._ahead.pop(seq)))
        return out

    async def close(self) -> None:
        await self._events.aclose()


def _misplaced(stored: StoredEvent) -> str | None:
    """Why a readable record does not belong on the decision tree, if it does not."""
    d = stored.envelope.data
    if isinstance(d, DecisionRecorded):
        if stored.subject != subject_for(d):
            return f"a decision for {d.namespace}/{d.name} stored on {stored.subject}"
        return None
    if isinstance(d, LeaderElected) and stored.subject == LEADER_SUBJECT:
        return None
    return f"a {stored.envelope.type} event where only decisions and leader elections belong"


async def verify(
    store: EventStore, from_seq: int = 1, *, nc: Any = None, now: datetime | None = None
) -> VerifyReport:
    """Recompute every decision from ``from_seq`` on, and audit what became of its commands.

    **Decisions.** Each is recomputed from the state at its ``state_seq`` with its recorded ``now`` and
    compared field by field. A record on ``dse.decision.>`` that does not decode, or is not a decision
    (or leader election) on its own subject, is an integrity failure: only the engine writes there, so
    passing over it (as the projector passes over other malformed events) would hide a lost or forged
    decision. Malformed events elsewhere are still skipped, and counted.

    **Effects.** Every command of every decision checked must be answered, or still be allowed time:

    - *answered*: the fold cleared it from ``in_flight`` (the report carrying its command id; or its pod
      went away or its node was removed, which the fold also counts as the answer). The rule is the
      fold's own, observed rather than re-implemented, so the audit and the engine agree.
    - *in flight*: unanswered and younger than ``EXPECTATIONS_TIMEOUT`` (300 s) at the instant judged
      at. Not a failure: the relay or the executor may just be behind.
    - *superseded*: unanswered, but a later decision of the same DaemonSet, taken after it had expired
      by that decision's own clock, addressed its node again (upstream's expectations timeout: the
      controller stops waiting and trusts what it sees). The system moved on; listed, not a failure.
    - *overdue* (an orphan, exit 1): unanswered past its window with nothing superseding it.

    The window is judged at the time of the last event in the log (its ``occurred_at``, the fold's
    clock), or at ``now`` if given, never at the wall clock: the verdict on a log is then a function of
    the log alone (verifying a copy next year gives today's answer), and a command counts as overdue only
    when the log itself shows that its 300 s went by without an answer. An engine that stopped right
    after recording a decision leaves a log whose last commands are in flight; ``--now`` asks the other
    question ("by this time, should they have been answered?").

    **Sent.** With a connection (``nc``), each unanswered command is looked for in ``DSE_COMMANDS`` (by
    the command id in its payload, which is also its ``Nats-Msg-Id``), in one ordered read from the
    earliest such decision on. An answered command was evidently sent, so nothing else is looked up.
    That stream keeps 24 h: if it ever dropped a message (its first sequence is past 1), absence proves
    "never sent" only for a command recorded after its oldest message still there, and older ones are
    "unknown" (both clocks are the server's). Sending is reported, but what fails an audit is the
    answer: a command answered in time was sent, and one sent but never answered is as lost.

    Streamed: three ordered reads (decision sequences only; the decisions again, lazily; everything) and
    the ``DSE_COMMANDS`` tail. Memory holds the folded state, the decision sequences (integers), the
    decisions read ahead of their state, and the unanswered commands: never the log.
    """
    started = time.perf_counter()
    report = VerifyReport()
    end = await store.last_seq()
    # pass 1: which decisions are due at which state sequence (integers only), and the decision tree's
    # integrity
    due: dict[int, list[int]] = {}
    errors: list[MalformedStoredEvent] = []
    async for stored in readable(
        store, [DECISION_TREE], [], start_seq=from_seq, end_seq=end, malformed=errors
    ):
        problem = _misplaced(stored)
        if problem is not None:
            report.malformed_decisions.append(IntegrityFailure(stored.seq, stored.subject, problem))
        d = stored.envelope.data
        if isinstance(d, DecisionRecorded):
            due.setdefault(d.state_seq, []).append(stored.seq)
    report.malformed_decisions.extend(IntegrityFailure(e.seq, e.subject, str(e)) for e in errors)
    report.malformed_decisions.sort(key=lambda f: f.seq)

    state = ClusterState()
    ledger = Ledger()
    decisions = _Decisions(store, from_seq, end)

    async def check_at(k: int) -> None:
        for seq, recorded in await decisions.take(due.pop(k, [])):
            key, at = f"{recorded.namespace}/{recorded.name}", recorded.now.timestamp()
            if recorded.scope:
                scoped = reconcile_nodes(state, key, list(recorded.scope), at)
                recomputed = scoped.decision if scoped is not None else None
            else:
                recomputed = reconcile(state, key, at).decision
            mismatch = compare(seq, recorded, recomputed)
            report.checked += 1
            # checked in the order of their states, not their own: keep the range
            report.first_seq = min(report.first_seq, seq) if report.first_seq else seq
            report.last_seq = max(report.last_seq, seq)
            if mismatch is not None:
                report.mismatches.append(mismatch)

    try:
        if 0 in due:
            await check_at(0)
        skipped = report.skipped_malformed
        passed = 0  # skipped events already accounted for
        async for stored in readable(store, None, skipped, end_seq=end):
            while passed < len(skipped):  # the engine's state also moved past them
                state.seq = skipped[passed]
                passed += 1
                if state.seq in due:
                    await check_at(state.seq)
            data = stored.envelope.data
            # which open commands this event may answer (the fold decides whether it does)
            candidates: list[str] = []
            if ledger.open:
                if isinstance(data, PodEvent):
                    candidates = [data.command_id] if data.command_id else []
                    for_pod = state.in_flight_by_pod.get(object_key(data.namespace, data.name))
                    if for_pod:
                        candidates.extend(for_pod)
                elif isinstance(data, NodeRemoved):
                    candidates = [cid for cid, c in ledger.open.items() if c.node == data.name]
            apply(state, stored.envelope, stored.seq)
            for cid in candidates:
                if cid in ledger.open and cid not in state.in_flight:
                    ledger.resolve(
                        cid, state.last_time, isinstance(data, PodEvent) and cid == data.command_id
                    )
            if isinstance(data, DecisionRecorded) and stored.seq >= from_seq:
                ledger.record(stored.seq, stored.time, state.last_time, data)
            if stored.seq in due:
                await check_at(stored.seq)
        while passed < len(skipped):  # malformed events at the very end
            state.seq = skipped[passed]
            passed += 1
            if state.seq in due:
                await check_at(state.seq)
        # a state_seq that names no stored event: unverifiable, so a mismatch
        for k in sorted(due):
            for seq, recorded in await decisions.take(due[k]):
                report.checked += 1
                report.mismatches.append(
                    Mismatch(
                        seq,
                        f"{recorded.namespace}/{recorded.name}",
                        "state_seq",
                        k,
                        "no such event in the log",
                    )
                )
    finally:
        await decisions.close()

    report.commands = ledger.commands
    report.answered = ledger.answered
    report.answered_late = ledger.answered_late
    report.resolved_otherwise = ledger.resolved_otherwise
    if now is not None:
        report.judged_at, report.judged_by = now, "--now"
    else:
        report.judged_at = datetime.fromtimestamp(state.last_time, UTC)
    judged = report.judged_at.timestamp()
    effects = []
    for c in ledger.open.values():
        age = judged - c.issued
        e = Effect(
            decision_seq=c.decision_seq,
            ds=c.ds,
            kind=c.kind,
            command_id=c.command_id,
            node=c.node,
            pod=c.pod,
            issued_at=datetime.fromtimestamp(c.issued, UTC),
            recorded_at=c.recorded,
            age_seconds=round(age, 3),
            superseded_by=c.superseded_by,
            state="superseded"
            if c.superseded_by
            else "overdue"
            if age >= EXPECTATIONS_TIMEOUT
            else "in_flight",
        )
        effects.append(e)
    if nc is not None and effects:
        report.sent_evidence = await look_for_sends(nc, effects)
    elif effects:
        report.sent_evidence = "not checked (no connection to DSE_COMMANDS)"
    for e in sorted(effects, key=lambda e: (e.decision_seq, e.command_id)):
        e.reason = effect_reason(e)
        {"in_flight": report.in_flight, "superseded": report.superseded, "overdue": report.orphans}[
            e.state
        ].append(e)
    report.seconds = time.perf_counter() - started
    return report


_LISTED = 20


def print_verify(report: VerifyReport, out: TextIO, fmt: Literal["text", "json"] = "text") -> int:
    """Exit 1 on any mismatch, any overdue command, any malformed decision record; else 0."""
    code = 1 if report.failed else 0
    if fmt == "json":
        body = msgspec.to_builtins(report)
        body["ok"] = code == 0
        out.write(json.dumps(body, indent=2, default=str) + "\n")
        return code
    for m in report.mismatches:
        out.write(
            f"MISMATCH decision at seq {m.seq} ({m.key}): {m.field} differs\n"
            f"  recorded:   {json.dumps(m.recorded, default=str)[:400]}\n"
            f"  recomputed: {json.dumps(m.recomputed, default=str)[:400]}\n"
        )
    for f in report.malformed_decisions:
        out.write(f"MALFORMED decision record at seq {f.seq} ({f.subject}): {f.reason}\n")
    for e in report.orphans:
        out.write(effect_line("ORPHAN", e))
    for label, listed in (("SUPERSEDED", report.superseded), ("IN FLIGHT", report.in_flight)):
        for e in listed[:_LISTED]:
            out.write(effect_line(label, e))
        if len(listed) > _LISTED:
            out.write(f"{label} ... and {len(listed) - _LISTED} more\n")
    tree = {f.seq for f in report.malformed_decisions}
    elsewhere = [s for s in report.skipped_malformed if s not in tree]
    if elsewhere:
        out.write(
            f"skipped {len(elsewhere)} malformed events outside the decision tree, as the projector does: "
            f"{elsewhere[:10]}\n"
        )
    verdict = "all match" if not report.mismatches else f"{len(report.mismatches)} differ"
    out.write(
        f"verified {report.checked} decisions (seq {report.first_seq}..{report.last_seq}) "
        f"in {report.seconds:.2f}s: {verdict}\n"
    )
    judged = report.judged_at.isoformat() if report.judged_at is not None else "-"
    out.write(
        f"audited {report.commands} commands: {report.answered} answered by their report"
        f" ({report.answered_late} after the {EXPECTATIONS_TIMEOUT:g}s window), {report.resolved_otherwise}"
        f" answered by their pod or node going away, {len(report.in_flight)} in flight,"
        f" {len(report.superseded)} expired and superseded, {len(report.orphans)} orphans"
        f" (judged at {judged}, {report.judged_by})\n"
    )
    if report.sent_evidence:
        out.write(f"sent: {report.sent_evidence}\n")
    if report.malformed_decisions:
        out.write(
            f"{len(report.malformed_decisions)} malformed records on the decision tree: integrity failure\n"
        )
    return code


# --- explain --------------------------------------------------------------------------------------
