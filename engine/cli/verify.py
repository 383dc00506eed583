"""``replay verify``: recompute every recorded decision from the log alone, and audit its effects.

Only decisions an engine wrote are recomputed: a record on the decision tree that no engine wrote (it
does not decode, is misplaced, is refused by the fold's fence rules, or was disowned by the leader; see
``projections.authority``) is *tamper evidence*, listed with whether any command was relayed from it,
and never compared (docs/design.md, "Tamper evidence"). Each decision is recomputed from the state
just before it (the state at its ``state_seq``, with its ``now``) and compared with what was recorded.
It works because the core is a pure function of (state, key, now) and every input is in the log. The
effects audit (``engine.cli.effects``) checks that every command of those decisions was answered by
its executor, or is still inside its in-flight window, or was superseded after it expired; anything
else is an orphan (see ``verify``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import msgspec

from engine.cli.effects import (
    Effect,
    Ledger,
    Sent,
    effect_line,
    effect_reason,
    look_for_relayed,
    look_for_sends,
)
from engine.cli.queries import readable
from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.core.reconcile import reconcile, reconcile_nodes
from engine.core.uids import api_uid
from engine.store.event_store import EventStore, MalformedStoredEvent
from events.envelope import Envelope
from events.subjects import DECISION_TREE
from events.types import DecisionRecorded, NodeRemoved, PodEvent
from projections.authority import Disowning, judge, misplaced
from projections.fold import apply
from projections.model import Authority, ClusterState, object_key


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
        if name == "commands":
            a, b = _api_uids(a), _api_uids(b)
        if a != b:
            path, va, vb = _first_difference(a, b, name)
            return Mismatch(seq, key, path, va, vb)
    return None


def _as_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def _api_uids(commands: Any) -> Any:
    """Commands with each ``pod_uid`` as the API shows it: a log recorded before pod uids were minted
    as UUIDs holds 32 hex digits where today's code mints the same digits as a UUID
    (``engine/core/uids.py``), so both compare equal and an older log still verifies."""
    if not isinstance(commands, list):
        return commands
    shown = []
    for c in commands:
        if isinstance(c, dict) and isinstance(c.get("pod_uid"), str):
            c = {**c, "pod_uid": api_uid(c["pod_uid"])}
        shown.append(c)
    return shown


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


class TamperFinding(msgspec.Struct, kw_only=True):
    """A record no engine wrote where only the engine writes (the decision tree, or an engine-only type
    anywhere): evidence of tampering, never a skip and never recomputed."""

    seq: int
    subject: str
    reason: str
    #: malformed (does not decode), misplaced, refused (the fold never took it: no reader acted on it),
    #: disowned (the fold took it, then its leader disowned it; the leader's relay did not send it)
    verdict: Literal["malformed", "misplaced", "refused", "disowned"]
    #: commands the record carries
    commands: int = 0
    #: whether commands were relayed from it (``DSE_COMMANDS``, by the relay's decision-seq header)
    relayed: Sent | Literal[""] = ""


class VerifyReport(msgspec.Struct, kw_only=True):
    checked: int = 0
    mismatches: list[Mismatch] = []
    skipped_malformed: list[int] = []
    #: records no engine wrote: reported, never skipped silently, never compared
    tampered: list[TamperFinding] = []
    #: sequences missing from the log (first, last): the log lost messages, nothing after can be trusted
    gaps: list[tuple[int, int]] = []
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
    def acted_on(self) -> list[TamperFinding]:
        """Tamper evidence that commands were relayed from: the one kind that fails the audit."""
        return [f for f in self.tampered if f.relayed == "yes"]

    @property
    def malformed_decisions(self) -> list[TamperFinding]:
        """Records on the tree that do not decode or are misplaced (a normal run has none)."""
        return [f for f in self.tampered if f.verdict in ("malformed", "misplaced")]

    @property
    def failed(self) -> bool:
        """A decision that recomputes differently, a command overdue, a gap in the log, or a record no
        engine wrote that commands were relayed from. Tamper evidence nobody acted on does not fail it:
        the log is immutable, so it would fail every audit from then on; it is listed every time."""
        return bool(self.mismatches or self.orphans or self.gaps or self.acted_on)


class _Decisions:
    """The recorded decisions, read a second time alongside the main pass and handed over when the
    fold reaches their ``state_seq``. Only the ones read ahead of that point are held (the distance
    between a decision and the state it was taken from), never all of them."""

    def __init__(self, store: EventStore, start: int, end: int, wanted: set[int]) -> None:
        self._events = readable(store, [DECISION_TREE], [], start_seq=start, end_seq=end)
        self._ahead: dict[int, DecisionRecorded] = {}
        self._wanted = wanted
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
                if isinstance(stored.envelope.data, DecisionRecorded) and stored.seq in self._wanted:
                    self._ahead[stored.seq] = stored.envelope.data
            if seq in self._ahead:
                out.append((seq, self._ahead.pop(seq)))
        return out

    async def close(self) -> None:
        await self._events.aclose()


async def _tree(
    store: EventStore, end: int
) -> AsyncIterator[tuple[int, str, datetime | None, Envelope | None, str]]:
    """Every record of the decision tree in order, those that do not decode included: (sequence,
    subject, stored time, envelope or None, the decode error)."""
    start = 1
    while True:
        try:
            async with contextlib.aclosing(
                store.read(start_seq=start, end_seq=end, subjects=[DECISION_TREE])
            ) as events:
                async for stored in events:
                    yield stored.seq, stored.subject, stored.time, stored.envelope, ""
            return
        except MalformedStoredEvent as err:
            yield err.seq, err.subject, None, None, str(err)
            start = err.seq + 1


async def _judge_tree(
    store: EventStore, end: int, from_seq: int, report: VerifyReport
) -> tuple[dict[int, list[int]], dict[int, datetime]]:
    """Pass 1: the decision tree judged as the fold judges it (``projections.authority``), and what its
    leaders disowned. Returns the decisions to recompute by the state sequence they were taken at, and
    when each record found to be tampered with was stored (for the relay lookup)."""
    authority = Authority()
    disowning = Disowning()
    due: dict[int, list[int]] = {}
    found: dict[int, TamperFinding] = {}
    stored_at: dict[int, datetime] = {}
    #: taken records that may still be disowned: subject, commands, when stored
    taken: dict[int, tuple[str, int, datetime | None]] = {}
    async for seq, subject, when, env, error in _tree(store, end):
        if env is None:
            found[seq] = TamperFinding(
                seq=seq,
                subject=subject,
                reason=f"a record that does not decode: {error}",
                verdict="malformed",
            )
        elif (problem := misplaced(subject, env)) is not None:
            found[seq] = TamperFinding(seq=seq, subject=subject, reason=problem, verdict="misplaced")
        elif (why := judge(authority, env, seq)) is not None:
            found[seq] = TamperFinding(seq=seq, subject=subject, reason=why, verdict="refused",
                                       commands=_commands(env))  # fmt: skip
            if when is not None:
                stored_at[seq] = when
        else:
            d = env.data
            taken[seq] = (subject, _commands(env), when)
            if isinstance(d, DecisionRecorded) and seq >= from_seq:
                due.setdefault(d.state_seq, []).append(seq)
        for gone in disowning.feed(seq, env):
            if gone in taken:
                gone_subject, commands, gone_at = taken.pop(gone)
                found[gone] = TamperFinding(
                    seq=gone,
                    subject=gone_subject,
                    reason=f"disowned by the leader's marker at seq {seq} (its writer did not write it)",
                    verdict="disowned",
                    commands=commands,
                )
                if gone_at is not None:
                    stored_at[gone] = gone_at
        if len(taken) > 2 * DISOWN_MEMORY:  # only the last few can still be disowned
            for old in sorted(taken)[:-DISOWN_MEMORY]:
                del taken[old]
    disowned = {s for s, f in found.items() if f.verdict == "disowned"}
    for seqs in due.values():
        seqs[:] = [s for s in seqs if s not in disowned]
    report.tampered = [found[s] for s in sorted(found)]
    return due, {s: stored_at[s] for s in found if s in stored_at and found[s].commands}


#: taken records kept while they can still be disowned (``projections.authority.DISOWN_WINDOW``)
DISOWN_MEMORY = 4096


def _commands(env: Envelope) -> int:
    return len(env.data.commands) if isinstance(env.data, DecisionRecorded) else 0


async def verify(
    store: EventStore, from_seq: int = 1, *, nc: Any = None, now: datetime | None = None
) -> VerifyReport:
    """Recompute every decision from ``from_seq`` on, and audit what became of its commands.

    **Decisions.** Each is recomputed from the state at its ``state_seq`` with its recorded ``now`` and
    compared field by field. A record on ``dse.decision.>`` that does not decode, is not a decision (or
    leader election) on its own subject, is refused by the fold's fence rules or was disowned by its
    leader is *tamper evidence* (``VerifyReport.tampered``): only the engine writes there, so passing
    over it would hide a forgery, and recomputing it would fail every audit from then on for a record
    the log can never lose. It is listed, with whether commands were relayed from it (with ``nc``); one
    that was acted on fails the audit. Malformed events elsewhere are still skipped, and counted; a
    sequence missing from the log (a gap) fails it.

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
    # pass 1: the decision tree judged from its start (which decisions are due at which state sequence,
    # integers only; what no engine wrote)
    due, forged_at = await _judge_tree(store, end, from_seq, report)
    tampered = {f.seq for f in report.tampered}

    state = ClusterState()
    ledger = Ledger()
    decisions = _Decisions(store, from_seq, end, {s for seqs in due.values() for s in seqs})

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
                _follows(report, state.seq, skipped[passed])
                state.seq = skipped[passed]
                passed += 1
                if state.seq in due:
                    await check_at(state.seq)
            _follows(report, state.seq, stored.seq)
            problem = misplaced(stored.subject, stored.envelope)
            if problem is not None:  # not folded, as in the projector
                if stored.seq not in tampered:
                    report.tampered.append(TamperFinding(seq=stored.seq, subject=stored.subject,
                                                         reason=problem, verdict="misplaced"))  # fmt: skip
                state.seq = stored.seq
                if stored.seq in due:
                    await check_at(stored.seq)
                continue
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
            if (
                isinstance(data, DecisionRecorded)
                and stored.seq >= from_seq
                and stored.seq not in tampered
                and state.authority.head == stored.seq  # taken by the fold
            ):
                ledger.record(stored.seq, stored.time, state.last_time, data)
            if stored.seq in due:
                await check_at(stored.seq)
        while passed < len(skipped):  # malformed events at the very end
            _follows(report, state.seq, skipped[passed])
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
    report.tampered.sort(key=lambda f: f.seq)
    relayed = await look_for_relayed(nc, forged_at) if nc is not None else {}
    for f in report.tampered:
        if f.commands:
            f.relayed = relayed.get(f.seq, "not checked")
    for e in sorted(effects, key=lambda e: (e.decision_seq, e.command_id)):
        e.reason = effect_reason(e)
        {"in_flight": report.in_flight, "superseded": report.superseded, "overdue": report.orphans}[
            e.state
        ].append(e)
    report.seconds = time.perf_counter() - started
    return report


def _follows(report: VerifyReport, last: int, seq: int) -> None:
    """Note a gap when ``seq`` does not follow ``last`` (the fold must see every sequence)."""
    if seq != last + 1:
        report.gaps.append((last + 1, seq - 1))


_LISTED = 20


def print_verify(report: VerifyReport, out: TextIO, fmt: Literal["text", "json"] = "text") -> int:
    """Exit 1 on any mismatch, any overdue command, any gap in the log, any record no engine wrote
    that commands were relayed from; else 0 (tamper evidence nobody acted on is listed, see
    ``VerifyReport.failed``)."""
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
    for first, last in report.gaps:
        out.write(f"GAP seq {first}..{last}: missing from the event log (deleted, or the stream replaced)\n")
    for f in report.tampered:
        out.write(f"{_tamper_label(f)} seq {f.seq} ({f.subject}): {f.reason}; {_tamper_outcome(f)}\n")
    for e in report.orphans:
        out.write(effect_line("ORPHAN", e))
    for label, listed in (("SUPERSEDED", report.superseded), ("IN FLIGHT", report.in_flight)):
        for e in listed[:_LISTED]:
            out.write(effect_line(label, e))
        if len(listed) > _LISTED:
            out.write(f"{label} ... and {len(listed) - _LISTED} more\n")
    tree = {f.seq for f in report.tampered}
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
    if report.tampered:
        acted = report.acted_on
        out.write(
            f"tamper evidence: {len(report.tampered)} records no engine wrote on the decision tree; "
            + (
                f"commands were relayed from {len(acted)} of them (seq {[f.seq for f in acted][:10]})\n"
                if acted
                else "none was acted on\n"
            )
        )
    if report.gaps:
        out.write(f"the log has {len(report.gaps)} gaps: integrity failure\n")
    return code


def _tamper_label(f: TamperFinding) -> str:
    return "ACTED ON" if f.relayed == "yes" else "TAMPER"


def _tamper_outcome(f: TamperFinding) -> str:
    if f.verdict in ("malformed", "misplaced"):
        return "not folded by any reader"
    taken = "refused by the fold" if f.verdict == "refused" else "not relayed by its leader"
    if not f.commands:
        return f"{taken}, no commands"
    relayed = {
        "yes": "COMMANDS WERE RELAYED FROM IT",
        "no": "no command relayed from it",
        "unknown": "relaying unknown (older than DSE_COMMANDS keeps)",
        "not checked": "relaying not checked",
        "": "relaying not checked",
    }[f.relayed]
    return f"{taken}, {f.commands} commands: {relayed}"


# --- explain --------------------------------------------------------------------------------------
