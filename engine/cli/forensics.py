"""Replay, explain and audit: answering "why does the fleet look like this?" from the log alone.

- ``replay verify`` recomputes every recorded decision from the state just before it (the state at its
  ``state_seq``, with its ``now``) and reports any that differ. It works because the core is a pure
  function of (state, key, now) and every input is in the log. It audits the effects too: every
  command of those decisions was answered by its executor, or is still inside its in-flight window, or
  was superseded after it expired; anything else is an orphan (see ``verify``).
- ``explain pod`` follows one pod's chain: the inputs in effect when it was decided, the decision and
  its reason for that node, the command, and every report its executor sent.
- ``explain node`` checks every placement rule of one DaemonSet against one node, now (or ``--at`` a
  point of the past, judged by that state's own clock).
- ``audit`` lists events in log order, filtered by subject on the server wherever possible.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TextIO

import msgspec

from engine.cli.queries import load_state, readable
from engine.core.eligibility import node_should_run
from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.core.reconcile import reconcile, reconcile_nodes
from engine.store.event_store import EventStore, MalformedStoredEvent, StoredEvent
from engine.store.jetstream_api import api_request
from engine.store.ordered import ordered_messages
from engine.store.streams import COMMANDS_STREAM
from events.errors import InvalidInput, NotFound
from events.subjects import (
    DECISION_TREE,
    LEADER_SUBJECT,
    PREFIX,
    command_subject,
    daemonset_filters,
    node_filters,
    pod_filters,
    subject_for,
    token,
    type_filter,
)
from events.types import (
    BY_TAG,
    CreatePod,
    DecisionRecorded,
    DeletePod,
    Event,
    EvictPod,
    LeaderElected,
    NodeRemoved,
    PodCreated,
    PodEvent,
)
from projections.fold import apply
from projections.model import ClusterState, object_key

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


class IntegrityFailure(msgspec.Struct, frozen=True):
    """A record on the decision tree that is not what only the engine writes there."""

    seq: int
    subject: str
    reason: str


EffectState = Literal["in_flight", "superseded", "overdue"]
Sent = Literal["yes", "no", "unknown", "not checked"]


class Effect(msgspec.Struct, kw_only=True):
    """A recorded command that no pod report has answered (yet), and what that means."""

    decision_seq: int
    ds: str
    kind: str
    command_id: str
    node: str
    pod: str
    #: the decision's ``occurred_at``: the clock the fold stamps ``issued_at`` with and the core times
    #: the in-flight window by
    issued_at: datetime
    #: when the store accepted the decision: the clock of ``DSE_COMMANDS``, for the "sent" evidence
    recorded_at: datetime
    age_seconds: float = 0.0
    state: EffectState = "in_flight"
    #: the later decision that addressed this command's node after it expired
    superseded_by: int = 0
    sent: Sent = "not checked"
    reason: str = ""


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


class _Open(msgspec.Struct, kw_only=True):
    """A command recorded and not answered so far (the ledger's entry; ``Effect`` once reported)."""

    decision_seq: int
    ds: str
    kind: str
    command_id: str
    node: str
    pod: str
    issued: float
    recorded: datetime
    superseded_by: int = 0


_KINDS: dict[type, str] = {CreatePod: "create_pod", DeletePod: "delete_pod", EvictPod: "evict_pod"}


class _Ledger:
    """The commands recorded and not yet answered, kept while the main pass folds the log.

    Its size is what is in flight (plus whatever was lost): an answered command leaves it at once, so
    the audit's memory does not grow with the log. Which event answers which command is not decided
    here but read from the fold (``projections.fold``): a command is answered when the projection
    clears it from ``in_flight``, so ``replay verify`` and the engine can never disagree about it.
    """

    def __init__(self) -> None:
        self.open: dict[str, _Open] = {}
        #: DaemonSet key -> ids of its open commands not yet superseded (insertion-ordered)
        self.by_ds: dict[str, dict[str, None]] = {}
        self.commands = 0
        self.answered = 0
        self.answered_late = 0
        self.resolved_otherwise = 0

    def record(self, seq: int, recorded: datetime, issued: float, d: DecisionRecorded) -> None:
        key = f"{d.namespace}/{d.name}"
        waiting = self.by_ds.get(key)
        if waiting:
            self._supersede(seq, d, waiting)
        for cmd in d.commands:
            self.commands += 1
            old = self.open.pop(cmd.id, None)
            if old is not None:  # re-recorded: the newer record replaces it, as in the fold
                self._unindex(old)
            self.open[cmd.id] = _Open(
                decision_seq=seq,
                ds=key,
                kind=_KINDS[type(cmd)],
                command_id=cmd.id,
                node=cmd.node,
                pod=cmd.pod_name,
                issued=issued,
                recorded=recorded,
            )
            self.by_ds.setdefault(key, {})[cmd.id] = None

    def _supersede(self, seq: int, d: DecisionRecorded, waiting: dict[str, None]) -> None:
        """A later decision of the same DaemonSet taken when a command had expired by that decision's
        own clock (``now >= issued_at + EXPECTATIONS_TIMEOUT``, exactly the core's ``is_live``) no
        longer waited for it; if it addressed the command's node by name (a command or a per-node
        reason there), the core decided that node afresh, and the old command is superseded."""
        now = d.now.timestamp()
        nodes: set[str] | None = None
        for cid in list(waiting):
            c = self.open[cid]
            if now < c.issued + EXPECTATIONS_TIMEOUT:
                continue
            if nodes is None:
                nodes = {x.node for x in d.commands} | {r.node for r in d.reasons if r.node}
            if c.node in nodes:
                c.superseded_by = seq
                del waiting[cid]

    def _unindex(self, c: _Open) -> None:
        ids = self.by_ds.get(c.ds)
        if ids is not None:
            ids.pop(c.command_id, None)
            if not ids:
                del self.by_ds[c.ds]

    def resolve(self, cid: str, at: float, by_its_report: bool) -> None:
        c = self.open.pop(cid)
        self._unindex(c)
        if by_its_report:
            self.answered += 1
            if at >= c.issued + EXPECTATIONS_TIMEOUT:
                self.answered_late += 1
        else:
            self.resolved_otherwise += 1


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
    ledger = _Ledger()
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
        report.sent_evidence = await _look_for_sends(nc, effects)
    elif effects:
        report.sent_evidence = "not checked (no connection to DSE_COMMANDS)"
    for e in sorted(effects, key=lambda e: (e.decision_seq, e.command_id)):
        e.reason = _reason(e)
        {"in_flight": report.in_flight, "superseded": report.superseded, "overdue": report.orphans}[
            e.state
        ].append(e)
    report.seconds = time.perf_counter() - started
    return report


_SENT_TEXT: dict[str, str] = {
    "yes": "sent",
    "no": "never sent",
    "unknown": "sending unknown (older than DSE_COMMANDS keeps)",
    "not checked": "sending not checked",
}


def _reason(e: Effect) -> str:
    sent = _SENT_TEXT[e.sent]
    if e.state == "overdue":
        return (
            "never sent"
            if e.sent == "no"
            else "sent, never answered"
            if e.sent == "yes"
            else f"never answered, {sent}"
        )
    if e.state == "superseded":
        return f"expired unanswered, superseded by decision seq {e.superseded_by} ({sent})"
    return f"in flight, {'not sent yet' if e.sent == 'no' else sent}"


class _CommandId(msgspec.Struct):
    id: str = ""


_command_id_decoder = msgspec.json.Decoder(_CommandId)
#: above this many distinct nodes the ``DSE_COMMANDS`` read is not filtered by node subject
_MAX_NODE_FILTERS = 32


def _command_id(seq: int, subject: str, time_ns: int, data: bytes) -> str:
    # only the id is needed: a create carries its whole pod template, not worth decoding here
    try:
        return _command_id_decoder.decode(data).id
    except msgspec.DecodeError:
        return ""


async def _look_for_sends(nc: Any, effects: list[Effect]) -> str:
    """Mark each effect sent (found in ``DSE_COMMANDS``), never sent (absent, though the stream still
    holds what was sent at its time) or unknown; return what the evidence covers, for the report."""
    try:
        info = await api_request(nc, f"STREAM.INFO.{COMMANDS_STREAM}")
    except NotFound:
        for e in effects:
            e.sent = "unknown"
        return f"no {COMMANDS_STREAM} stream: sending unknown"
    st = info["state"]
    last, messages = int(st.get("last_seq", 0)), int(st.get("messages", 0))
    if last == 0:
        for e in effects:
            e.sent = "no"
        return f"{COMMANDS_STREAM} has never held a message"
    if messages == 0:
        for e in effects:
            e.sent = "unknown"
        return f"{COMMANDS_STREAM} is empty (everything aged out): sending unknown"
    kept_since = datetime.fromisoformat(st["first_ts"])  # 3.11 reads "Z" and nanoseconds
    wanted = {e.command_id for e in effects}
    nodes = sorted({e.node for e in effects})
    filters = [command_subject(n) for n in nodes] if len(nodes) <= _MAX_NODE_FILTERS else []
    # a command is published after its decision is stored: start a second early for clock jitter
    # between the servers of a cluster
    since = min(e.recorded_at for e in effects) - timedelta(seconds=1)
    found: set[str] = set()
    ids = ordered_messages(
        nc,
        COMMANDS_STREAM,
        start_time=max(since, kept_since),
        filters=filters,
        stop_at=last,
        convert=_command_id,
    )
    async with contextlib.aclosing(ids):
        async for cid in ids:
            if cid in wanted:
                found.add(cid)
    # nothing ever removed (first_seq 1): the stream holds every command ever sent; else what went was
    # older than its oldest message, so only a command recorded after that one would still be there
    complete = int(st.get("first_seq", 0)) <= 1
    for e in effects:
        kept = complete or e.recorded_at >= kept_since
        e.sent = "yes" if e.command_id in found else "no" if kept else "unknown"
    if complete:
        return f"{COMMANDS_STREAM} holds every command ever sent"
    return f"{COMMANDS_STREAM} holds commands sent since {kept_since.isoformat()}"


def _age(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _effect_line(label: str, e: Effect) -> str:
    return (
        f"{label} decision seq {e.decision_seq} ds {e.ds}: {e.kind} {e.command_id} node {e.node} "
        f"pod {e.pod} age {_age(e.age_seconds)}: {e.reason}\n"
    )


#: most in-flight and superseded commands listed one by one (orphans are always all listed)
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
        out.write(_effect_line("ORPHAN", e))
    for label, listed in (("SUPERSEDED", report.superseded), ("IN FLIGHT", report.in_flight)):
        for e in listed[:_LISTED]:
            out.write(_effect_line(label, e))
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
    now = state_clock(state, at)
    when = "" if at is None else f", as of {datetime.fromtimestamp(now, UTC).isoformat()}"
    out.write(f"daemonset {ns}/{name} on node {node} (log seq {state.seq}{when}):\n")
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
    result = reconcile(state, ds.key, now)
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
        from engine.cli.present import table

        body = [
            [str(r.seq), _when(r), r.envelope.type, r.envelope.source, summarize(r.envelope.data)]
            for r in rows
        ]
        out.write(table(["SEQ", "TIME", "TYPE", "SOURCE", "SUMMARY"], body))
    return 0
