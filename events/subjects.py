"""Subject naming, in one place (a public contract: other services publish here, audits filter here).

    dse.node.<node>.<type>                 node facts
    dse.ds.<namespace>.<name>.<type>       DaemonSet facts
    dse.pod.<node>.<namespace>.<pod>.<type> pod reports (namespace added to the starting design: pod
                                            names are unique per namespace only)
    dse.decision.<namespace>.<name>        reconcile decisions
    dse.decision._leader                   leader elections (inside the decision tree: fencing, see
                                            engine/store/lease.py; ``_`` cannot start a namespace)
    dse.cmd.<node>                         commands for one node's executor (command stream)
    dse.rejected.<reason>                  input that failed validation (rejected stream)
    dse.ingest.event, dse.ingest.batch     the ingest service's request endpoints (not stored)
    dse.logs.<node>                        a pod's log, asked of the executor serving the node (not stored)
    dse.logs.<node>.<reader>               its answers: the reply subject a reader gives (not stored)

``<type>`` is the event tag without its first part (``node.registered`` -> ``registered``). Names are
DNS-1123, so they never contain ``_``; a ``.`` in a name is written ``_`` to keep it one subject token.

Every subject and subject filter the project uses is built here and nowhere else, so a change of scheme
is one edit and the AsyncAPI document (``events.asyncapi``, derived from these functions) cannot drift
from what the code publishes and reads. The stream names sit here too: which stream holds which subjects
is part of the same public contract.
"""

from __future__ import annotations

from events.types import (
    DaemonSetApplied,
    DaemonSetDeleted,
    DecisionRecorded,
    Event,
    LeaderElected,
    PodEvent,
)

PREFIX = "dse"
EVENTS_STREAM = "DSE_EVENTS"
COMMANDS_STREAM = "DSE_COMMANDS"
REJECTED_STREAM = "DSE_REJECTED"
EVENT_SUBJECTS: tuple[str, ...] = (
    f"{PREFIX}.node.>",
    f"{PREFIX}.ds.>",
    f"{PREFIX}.pod.>",
    f"{PREFIX}.decision.>",
)
#: every command, for every node
COMMAND_TREE = f"{PREFIX}.cmd.>"
COMMAND_SUBJECTS: tuple[str, ...] = (COMMAND_TREE,)
REJECTED_SUBJECTS: tuple[str, ...] = (f"{PREFIX}.rejected.>",)
#: every decision and leader election: the single-writer tree the leader fences its appends on
DECISION_TREE = f"{PREFIX}.decision.>"
LEADER_SUBJECT = f"{PREFIX}.decision._leader"
#: every pod report, from every node
POD_TREE = f"{PREFIX}.pod.>"
#: the ingest service's endpoints (request/reply; nothing is stored on them)
INGEST_EVENT_SUBJECT = f"{PREFIX}.ingest.event"
INGEST_BATCH_SUBJECT = f"{PREFIX}.ingest.batch"


def token(name: str) -> str:
    return name.replace(".", "_")


def _suffix(tag: str) -> str:
    return tag.split(".", 1)[1]


def subject_for(event: Event) -> str:
    tag = event.TAG
    if isinstance(event, DecisionRecorded):
        return decision_subject(event.namespace, event.name)
    if isinstance(event, LeaderElected):
        return LEADER_SUBJECT
    if isinstance(event, DaemonSetApplied | DaemonSetDeleted):
        return f"{PREFIX}.ds.{token(event.namespace)}.{token(event.name)}.{_suffix(tag)}"
    if isinstance(event, PodEvent):
        return f"{PREFIX}.pod.{token(event.node)}.{token(event.namespace)}.{token(event.name)}.{_suffix(tag)}"
    if tag.startswith("node."):
        name: str = getattr(event, "name")  # noqa: B009 - every node fact has a name
        return f"{PREFIX}.node.{token(name)}.{_suffix(tag)}"
    raise ValueError(f"no subject rule for {tag!r}")


def decision_subject(namespace: str, name: str) -> str:
    """Where one DaemonSet's decisions are recorded (one subject: the fencing checks its sequence)."""
    return f"{PREFIX}.decision.{token(namespace)}.{token(name)}"


def command_subject(node: str) -> str:
    return f"{PREFIX}.cmd.{token(node)}"


def logs_request(node: str | None = None) -> str:
    """Where the executor serving ``node`` is asked for a pod's log (None: every node, what a fleet
    serves). Request/reply, nothing stored (engine/executor/pod_logs.py)."""
    return f"{PREFIX}.logs.{'*' if node is None else token(node)}"


def logs_reply(node: str | None = None, reader: str | None = None) -> str:
    """Where the answers about ``node``'s pods go: a reader names this subject as its reply, ``reader``
    one token of its own choosing (None for either: every one). The answers sit under the node's own
    subject, not in an inbox, so the node's executor may publish them without ``allow_responses``
    (engine/security/roles.py says why)."""
    return f"{logs_request(node)}.{'*' if reader is None else token(reader)}"


def rejected_subject(reason: str) -> str:
    return f"{PREFIX}.rejected.{token(reason)}"


def node_tree(node: str) -> str:
    """Every fact about one node (not its pods' reports: see ``node_filters``)."""
    return f"{PREFIX}.node.{token(node)}.>"


def daemonset_tree(namespace: str, name: str) -> str:
    """Every fact about one DaemonSet (not its decisions: see ``daemonset_filters``)."""
    return f"{PREFIX}.ds.{token(namespace)}.{token(name)}.>"


def pod_tree(node: str, namespace: str, name: str) -> str:
    """Every report about one pod on one node."""
    return f"{PREFIX}.pod.{token(node)}.{token(namespace)}.{token(name)}.>"


def pod_reports(node: str | None = None) -> str:
    """Every pod report from one node, or from every node when ``node`` is None."""
    return POD_TREE if node is None else f"{PREFIX}.pod.{token(node)}.>"


def node_filters(node: str) -> list[str]:
    """Everything about one node: its facts and its pods' reports."""
    return [node_tree(node), pod_reports(node)]


def daemonset_filters(namespace: str, name: str) -> list[str]:
    """One DaemonSet's facts and decisions."""
    return [daemonset_tree(namespace, name), decision_subject(namespace, name)]


def pod_filters(name: str, namespace: str = "*") -> list[str]:
    """One pod's reports, whichever node it is on (``namespace="*"``: in any namespace)."""
    return [f"{PREFIX}.pod.*.{token(namespace)}.{token(name)}.>"]


def type_filter(tag: str) -> str:
    """All events of one tag, e.g. ``node.cordoned`` -> ``dse.node.*.cordoned``."""
    kind, suffix = tag.split(".", 1)
    if kind == "node":
        return f"{PREFIX}.node.*.{suffix}"
    if kind == "daemonset":
        return f"{PREFIX}.ds.*.*.{suffix}"
    if kind == "pod":
        return f"{PREFIX}.pod.*.*.*.{suffix}"
    if kind == "decision":
        return decision_subject("*", "*")
    if kind == "leader":
        return LEADER_SUBJECT
    raise ValueError(f"unknown event kind in tag {tag!r}")


def intersect(a: str, b: str) -> str | None:
    """The filter matching exactly what both NATS filters match, or None if no subject matches both.

    Token by token: ``*`` yields to the other side's token, ``>`` (one or more tokens) to whatever the
    other side still has. This is what lets a query on several dimensions (a node *and* an event type)
    be one server-side filter instead of a client-side scan."""
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


def intersect_groups(groups: list[list[str]]) -> list[str]:
    """Filters for what matches some filter of every group (each group a union of filters): the union,
    over every choice of one filter per group, of their intersection; choices that match nothing are
    left out, so an empty result means nothing can match."""
    choices: list[list[str]] = [[]]
    for group in groups:
        choices = [[*prefix, f] for prefix in choices for f in group]
    out = []
    for choice in choices:
        acc: str | None = choice[0] if choice else None
        for f in choice[1:]:
            if acc is None:
                break
            acc = intersect(acc, f)
        if acc is not None:
            out.append(acc)
    return out
