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

``<type>`` is the event tag without its first part (``node.registered`` -> ``registered``). Names are
DNS-1123, so they never contain ``_``; a ``.`` in a name is written ``_`` to keep it one subject token.
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
EVENT_SUBJECTS: tuple[str, ...] = (
    f"{PREFIX}.node.>",
    f"{PREFIX}.ds.>",
    f"{PREFIX}.pod.>",
    f"{PREFIX}.decision.>",
)
COMMAND_SUBJECTS: tuple[str, ...] = (f"{PREFIX}.cmd.>",)
REJECTED_SUBJECTS: tuple[str, ...] = (f"{PREFIX}.rejected.>",)
#: every decision and leader election: the single-writer tree the leader fences its appends on
DECISION_TREE = f"{PREFIX}.decision.>"
LEADER_SUBJECT = f"{PREFIX}.decision._leader"


def token(name: str) -> str:
    return name.replace(".", "_")


def _suffix(tag: str) -> str:
    return tag.split(".", 1)[1]


def subject_for(event: Event) -> str:
    tag = event.TAG
    if isinstance(event, DecisionRecorded):
        return f"{PREFIX}.decision.{token(event.namespace)}.{token(event.name)}"
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


def command_subject(node: str) -> str:
    return f"{PREFIX}.cmd.{token(node)}"


def rejected_subject(reason: str) -> str:
    return f"{PREFIX}.rejected.{token(reason)}"


def node_filters(node: str) -> list[str]:
    """Everything about one node: its facts and its pods' reports."""
    t = token(node)
    return [f"{PREFIX}.node.{t}.>", f"{PREFIX}.pod.{t}.>"]


def daemonset_filters(namespace: str, name: str) -> list[str]:
    """One DaemonSet's facts and decisions."""
    ns, n = token(namespace), token(name)
    return [f"{PREFIX}.ds.{ns}.{n}.>", f"{PREFIX}.decision.{ns}.{n}"]


def pod_filters(name: str, namespace: str = "*") -> list[str]:
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
        return f"{PREFIX}.decision.*.*"
    if kind == "leader":
        return LEADER_SUBJECT
    raise ValueError(f"unknown event kind in tag {tag!r}")
