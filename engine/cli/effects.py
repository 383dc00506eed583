"""The effects audit of ``replay verify``: what became of every command the checked decisions recorded.

A command is *answered* when the fold clears it from ``in_flight`` (its report, or its pod or node going
away), *in flight* while younger than the expectations timeout, *superseded* once a later decision of
its DaemonSet addressed its node after it expired, and *overdue* (an orphan) otherwise; whether it was
ever sent is looked up in ``DSE_COMMANDS``. The rules are ``engine.cli.verify.verify``'s docstring;
this module keeps the ledger and the evidence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.reconciler.relay import DECISION_SEQ_HEADER
from engine.store.jetstream_api import api_request
from engine.store.ordered import ordered_messages
from engine.store.streams import COMMANDS_STREAM
from events.errors import NotFound
from events.subjects import command_subject
from events.types import CreatePod, DecisionRecorded, DeletePod, EvictPod

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


class Ledger:
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


_SENT_TEXT: dict[str, str] = {
    "yes": "sent",
    "no": "never sent",
    "unknown": "sending unknown (older than DSE_COMMANDS keeps)",
    "not checked": "sending not checked",
}


def effect_reason(e: Effect) -> str:
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


async def look_for_sends(nc: Any, effects: list[Effect]) -> str:
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


def effect_line(label: str, e: Effect) -> str:
    return (
        f"{label} decision seq {e.decision_seq} ds {e.ds}: {e.kind} {e.command_id} node {e.node} "
        f"pod {e.pod} age {_age(e.age_seconds)}: {e.reason}\n"
    )


def _decision_seq(
    seq: int, subject: str, time_ns: int, data: bytes, headers: Mapping[str, str] | None
) -> int:
    try:
        return int((headers or {}).get(DECISION_SEQ_HEADER, "0"))
    except ValueError:
        return 0


async def look_for_relayed(nc: Any, decisions: dict[int, datetime]) -> dict[int, Sent]:
    """For each decision sequence (with the time it was stored): were commands relayed from it? Read
    from ``DSE_COMMANDS`` by the relay's ``Dsctl-Decision-Seq`` header, from the earliest of them on
    ("yes"; "no" when the stream still holds what was sent at that time; else "unknown"). How ``replay
    verify`` shows that a record no engine wrote was not acted on."""
    if not decisions:
        return {}
    try:
        info = await api_request(nc, f"STREAM.INFO.{COMMANDS_STREAM}")
    except NotFound:
        return dict.fromkeys(decisions, "unknown")
    st = info["state"]
    last, messages = int(st.get("last_seq", 0)), int(st.get("messages", 0))
    if last == 0:
        return dict.fromkeys(decisions, "no")
    if messages == 0:
        return dict.fromkeys(decisions, "unknown")
    kept_since = datetime.fromisoformat(st["first_ts"])
    complete = int(st.get("first_seq", 0)) <= 1
    since = min(decisions.values()) - timedelta(seconds=1)
    found: set[int] = set()
    seqs = ordered_messages(
        nc,
        COMMANDS_STREAM,
        start_time=max(since, kept_since),
        stop_at=last,
        convert_headers=_decision_seq,
    )
    async with contextlib.aclosing(seqs):
        async for seq in seqs:
            if seq in decisions:
                found.add(seq)
    return {
        seq: "yes" if seq in found else "no" if complete or at >= kept_since else "unknown"
        for seq, at in decisions.items()
    }
