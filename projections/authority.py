"""Who wrote each record of the decision tree, judged from the log alone (docs/design.md, "Tamper evidence").

Only the leading engine writes on ``dse.decision.>``: a leader marker (``leader.elected``) when it takes
the lease, then its decisions, each appended with the subject-tree fence, i.e. only if the last record on
the tree is the writer's own previous one (``engine/reconciler/fencing.py``). So in a log engines wrote:

- every decision names the holder of the latest marker as its source, and its id is
  ``decision_id(decision, previous)``, ``previous`` being the sequence of the record before it on the
  tree: the writer puts the sequence it fenced on into the id;
- a marker's source is its holder;
- a decision or a marker is stored on its own subject, and nothing else is stored on the tree.

The fold takes a decision only when all of that holds (``judge``); anything else is *refused*: counted,
never folded, so no reader (the engine, the relay, an executor, ``replay verify``) acts on it. A marker
is always taken (the latest wins): the fold cannot ask the lease bucket who holds the lease, so the
engine that does hold it appends a marker of its own after a foreign one (``engine/reconciler``), naming
as the envelope's ``causation_id`` the id of its last genuine record; the records between are
*disowned* (``Disowning``). Decisions before the first marker (logs written before engines recorded
elections) are taken as they are.

What this cannot catch without a secret: a forger who copies the leader's name and computes the id the
same way. The leader itself knows what it wrote and refuses to relay anything else; see docs/design.md.
"""

from __future__ import annotations

from collections import deque

from events.envelope import Envelope
from events.ids import stable_id
from events.subjects import DECISION_TREE, subject_for
from events.types import DecisionRecorded, LeaderElected
from projections.model import Authority

_TREE_PREFIX = DECISION_TREE[:-1]  # "dse.decision."


def decision_id(decision: DecisionRecorded, fenced_on: int) -> str:
    """The envelope id of a decision appended with the tree fence at ``fenced_on`` (the sequence of
    the tree's last record when it was appended). The writer and the fold share this rule."""
    return stable_id("decision", decision.uid, decision.state_seq, decision.generation, fenced_on)


def on_tree(subject: str) -> bool:
    return subject.startswith(_TREE_PREFIX)


def misplaced(subject: str, envelope: Envelope) -> str | None:
    """Why a record does not belong where it is stored, if it does not: the engine-only types
    (decisions, leader markers) live on their own subjects of the decision tree, and nothing else does."""
    data = envelope.data
    if isinstance(data, DecisionRecorded | LeaderElected):
        if subject != subject_for(data):
            return f"a {envelope.type} record stored on {subject}, not on {subject_for(data)}"
        return None
    if on_tree(subject):
        return f"a {envelope.type} event on the decision tree ({subject}), where only the engine writes"
    return None


def refusal(authority: Authority, envelope: Envelope) -> str | None:
    """Why the decision-tree record ``envelope`` would be refused by ``authority`` now, or None (taken;
    also for events of other types, which are not this module's business). Changes nothing."""
    data = envelope.data
    if isinstance(data, LeaderElected):
        if envelope.source != data.holder:
            return f"a leader marker for {data.holder!r} written by {envelope.source!r}"
        return None
    if not isinstance(data, DecisionRecorded) or not authority.holder:
        # before the first marker decisions are taken as they are (logs before elections were recorded)
        return None
    if envelope.source != authority.holder or data.leader not in ("", authority.holder):
        return (
            f"a decision by {envelope.source!r} while {authority.holder!r} leads "
            f"(marker at seq {authority.marker_seq})"
        )
    if envelope.id != decision_id(data, authority.head):
        return (
            f"a decision not fenced on the leader's last record (seq {authority.head}): "
            "its id does not name that sequence"
        )
    return None


def judge(authority: Authority, envelope: Envelope, seq: int) -> str | None:
    """Take the decision-tree record ``envelope`` (at ``seq``) into ``authority``, or say why not.

    None: taken (a marker becomes the authority; a decision becomes the head). A reason: refused, and
    ``authority.refused`` counts it. Other events are not this function's business (None)."""
    data = envelope.data
    if not isinstance(data, DecisionRecorded | LeaderElected):
        return None
    reason = refusal(authority, envelope)
    if reason is not None:
        authority.refused += 1
        return reason
    if isinstance(data, LeaderElected):
        authority.holder, authority.epoch = data.holder, data.epoch
        authority.marker_seq = seq
    authority.head = seq
    return None


#: how many recent tree records a ``Disowning`` remembers (a leader disowns what was appended since its
#: last genuine record, found within milliseconds, so the run is short)
DISOWN_WINDOW = 4096


class Disowning:
    """Finds the records a leader disowned: fed every record of the decision tree in order, it answers,
    at a marker whose ``causation_id`` names an earlier record, the sequences stored after that record
    and before the marker (decisions and markers alike): the leader says its last genuine record was
    the one named, so those were not its own."""

    def __init__(self, window: int = DISOWN_WINDOW) -> None:
        self._recent: deque[tuple[int, str]] = deque(maxlen=window)
        self.unresolved: list[int] = []

    def feed(self, seq: int, envelope: Envelope | None) -> list[int]:
        """Note one tree record (``None``: one that does not decode); return what it disowns."""
        out: list[int] = []
        data = envelope.data if envelope is not None else None
        cause = envelope.causation_id if envelope is not None else ""
        if isinstance(data, LeaderElected) and cause:
            found = next((i for i, (_, rid) in enumerate(self._recent) if rid == cause), None)
            if found is None:
                self.unresolved.append(seq)
            else:
                out = [s for s, _ in list(self._recent)[found + 1 :]]
        self._recent.append((seq, envelope.id if envelope is not None else ""))
        return out
