"""The read model shown the way kubectl shows Kubernetes objects: tables by default, ``-o json`` /
``-o yaml`` objects shaped like the API server's (so a user's ``jq`` scripts keep working), and
``describe``'s layout; and the one-line event summaries of explain, audit and the live view.

Pure functions of the state, the events already read and ``now`` (for ages); reading the log and
printing happen in the caller, so the commands stay about what they read and this module about looks.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec

from engine.core import api_objects, selectors
from engine.core.eligibility import placement
from engine.core.progress import controls
from events.k8s import REVISION_HASH_LABEL, PodTemplate
from events.types import DecisionRecorded, Event, PodEvent
from projections.model import ClusterState, DaemonSetState, NodeState, PodState, Revision

_to_builtins = msgspec.to_builtins


rfc3339 = api_objects.rfc3339


def age(ts: float, now: float) -> str:
    """kubectl's short duration (``37s``, ``4m35s``, ``3h2m``, ``12d``)."""
    s = max(0, int(now - ts))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """kubectl's plain table: columns padded to the widest cell plus three spaces."""
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = []
    for line in [headers, *rows]:
        out.append("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
    return "\n".join(out) + "\n"


# --- objects (shaped as the API server returns them: engine.core.api_objects) -----------------------------

template_of = api_objects.pod_template
daemonset_object = api_objects.daemonset
node_object = api_objects.node
as_list = api_objects.as_list


def pod_object(state: ClusterState, pod: PodState) -> dict[str, Any]:
    return api_objects.pod(state, pod)


# --- tables ------------------------------------------------------------------------------------------------


def node_selector_text(template: PodTemplate) -> str:
    where = placement(template)
    if not where.node_selector:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(where.node_selector.items()))


def labels_text(labels: dict[str, str]) -> str:
    """The LABELS column of ``--show-labels``: ``k=v,k2=v2`` in key order, ``<none>`` for none."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def pod_labels(pod: PodState) -> dict[str, str]:
    """A pod's labels as its object shows them (the revision hash label included)."""
    return {**pod.labels, REVISION_HASH_LABEL: pod.revision_hash} if pod.revision_hash else pod.labels


def ds_rows(
    items: list[DaemonSetState], now: float, *, namespaces: bool, wide: bool, labels: bool = False
) -> str:
    headers = ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"]
    if wide:
        headers += ["CONTAINERS", "IMAGES", "SELECTOR"]
    if namespaces:
        headers = ["NAMESPACE", *headers]
    rows = []
    for ds in items:
        st = ds.status
        row = [
            ds.name,
            str(st.desired_number_scheduled),
            str(st.current_number_scheduled),
            str(st.number_ready),
            str(st.updated_number_scheduled),
            str(st.number_available),
            node_selector_text(ds.spec.template),
            age(ds.created_at, now),
        ]
        if wide:
            containers = ds.spec.template.spec.get("containers") or []
            row += [
                ",".join(str(c.get("name", "")) for c in containers if isinstance(c, dict)) or "<none>",
                ",".join(str(c.get("image", "")) for c in containers if isinstance(c, dict)) or "<none>",
                selectors.describe(ds.spec.selector),
            ]
        if labels:
            row.append(labels_text(ds.labels))
        rows.append([ds.namespace, *row] if namespaces else row)
    return table([*headers, "LABELS"] if labels else headers, rows)


def pod_status(pod: PodState) -> str:
    if pod.deletion_timestamp is not None:
        return "Terminating"
    return {"Succeeded": "Completed", "Failed": "Error"}.get(pod.phase, pod.phase)


def container_count(state: ClusterState, pod: PodState) -> int:
    template = template_of(state, pod)
    containers = template.spec.get("containers") if template is not None else None
    return len(containers) if isinstance(containers, list) and containers else 1


def pod_rows(
    state: ClusterState,
    items: list[PodState],
    now: float,
    *,
    namespaces: bool,
    wide: bool,
    labels: bool = False,
) -> str:
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        headers += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    if namespaces:
        headers = ["NAMESPACE", *headers]
    rows = []
    for pod in items:
        n = container_count(state, pod)
        row = [pod.name, f"{n if pod.ready else 0}/{n}", pod_status(pod), "0", age(pod.created_at, now)]
        if wide:
            row += ["<none>", pod.node, "<none>", "<none>"]
        if labels:
            row.append(labels_text(pod_labels(pod)))
        rows.append([pod.namespace, *row] if namespaces else row)
    return table([*headers, "LABELS"] if labels else headers, rows)


def node_status(node: NodeState) -> str:
    ready = node.conditions.get("Ready")
    text = (
        "Ready"
        if ready is None or ready.status == "True"
        else ("NotReady" if ready.status == "False" else "Unknown")
    )
    return text + (",SchedulingDisabled" if node.unschedulable else "")


def node_roles(node: NodeState) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in node.labels if k.startswith(prefix) and k != prefix)
    return ",".join(roles) or "<none>"


def node_rows(items: list[NodeState], now: float, *, wide: bool, labels: bool = False) -> str:
    """kubectl's node columns (``wide`` adds TAINTS and LABELS, so ``labels`` adds nothing more there)."""
    headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        headers += ["TAINTS", "LABELS"]
    rows = []
    for node in items:
        row = [node.name, node_status(node), node_roles(node), age(node.created_at, now), "<none>"]
        if wide:
            row += [
                ",".join(f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in node.taints)
                or "<none>",
                labels_text(node.labels),
            ]
        elif labels:
            row.append(labels_text(node.labels))
        rows.append(row)
    return table([*headers, "LABELS"] if labels and not wide else headers, rows)


def revision_rows(revisions: list[Revision]) -> str:
    return table(
        ["REVISION", "CHANGE-CAUSE"], [[str(r.number), r.change_cause or "<none>"] for r in revisions]
    )


# --- describe ------------------------------------------------------------------------------------------

#: one row of a describe Events section: (time, Normal|Warning, reason, message)
EventRow = tuple[float, str, str, str]


def kv_lines(title: str, mapping: dict[str, str], indent: int = 0) -> list[str]:
    """``Labels:  a=b`` with the next pairs aligned under the first, as kubectl describe prints maps."""
    pad = " " * indent
    if not mapping:
        return [f"{pad}{title}<none>"]
    items = sorted(mapping.items())
    lines = [f"{pad}{title}{items[0][0]}={items[0][1]}"]
    lines += [f"{pad}{' ' * len(title)}{k}={v}" for k, v in items[1:]]
    return lines


def events_section(rows: list[EventRow], now: float) -> list[str]:
    if not rows:
        return ["Events:  <none>"]
    body = [[kind, reason, age(t, now), "daemonset-controller", msg] for t, kind, reason, msg in rows]
    dashes = ["----", "------", "----", "----", "-------"]
    text = table(["Type", "Reason", "Age", "From", "Message"], [dashes, *body])
    return ["Events:", *("  " + line for line in text.rstrip("\n").splitlines())]


def template_lines(template: PodTemplate) -> list[str]:
    """The ``Pod Template:`` block of describe, also what ``rollout history --revision N`` shows."""
    lines = ["Pod Template:"]
    lines += kv_lines("  Labels:  ", dict(template.metadata.labels))
    if template.metadata.annotations:
        lines += kv_lines("  Annotations:  ", dict(template.metadata.annotations))
    lines.append("  Containers:")
    for c in template.spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        lines.append(f"   {c.get('name', '')}:")
        lines.append(f"    Image:      {c.get('image', '<none>')}")
        if c.get("command"):
            lines.append("    Command:")
            lines += [f"      {a}" for a in c["command"]]
        if c.get("args"):
            lines.append("    Args:")
            lines += [f"      {a}" for a in c["args"]]
    return lines


def toleration_text(t: dict[str, Any]) -> str:
    effect = ":" + t["effect"] if t.get("effect") else ""
    return f"{t.get('key') or '<all>'}{effect} op={t.get('operator') or 'Equal'}"


def describe_daemonset(state: ClusterState, ds: DaemonSetState, events: list[EventRow], now: float) -> str:
    st = ds.status
    pods = [state.pods[k] for k in state.pods_by_owner.get(ds.uid, ())]
    phases = {
        ph: sum(1 for p in pods if p.phase == ph) for ph in ("Running", "Pending", "Succeeded", "Failed")
    }
    lines = [
        f"Name:           {ds.name}",
        f"Namespace:      {ds.namespace}",
        f"Selector:       {selectors.describe(ds.spec.selector)}",
        f"Node-Selector:  {node_selector_text(ds.spec.template)}",
        *kv_lines("Labels:         ", dict(ds.labels)),
        *kv_lines(
            "Annotations:    ",
            {**ds.annotations, "deprecated.daemonset.template.generation": str(ds.generation)},
        ),
        f"Update Strategy: {ds.spec.update_strategy.type}",
        *rollout_control_lines(ds),
        f"Desired Number of Nodes Scheduled: {st.desired_number_scheduled}",
        f"Current Number of Nodes Scheduled: {st.current_number_scheduled}",
        f"Number of Nodes Scheduled with Up-to-date Pods: {st.updated_number_scheduled}",
        f"Number of Nodes Scheduled with Available Pods: {st.number_available}",
        f"Number of Nodes Misscheduled: {st.number_misscheduled}",
        f"Pods Status:  {phases['Running']} Running / {phases['Pending']} Waiting / "
        f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed",
        *template_lines(ds.spec.template),
        *events_section(events, now),
    ]
    return "\n".join(lines) + "\n"


def rollout_control_lines(ds: DaemonSetState) -> list[str]:
    """The rollout controls and the guard's conditions (docs/rollout-control.md), when there are any:
    a plain DaemonSet describes exactly as before."""
    lines = [f"Rollout Control: {c}" for c in controls(ds, ds.status.desired_number_scheduled)]
    if ds.status.conditions:
        lines.append("Conditions:")
        lines.append("  Type             Status  Reason                   Revision    Message")
        for c in ds.status.conditions:
            reason = c.reason or "-"
            lines.append(
                f"  {c.type:<16} {c.status:<7} {reason:<24} {c.revision or '-':<11} {c.message}".rstrip()
            )
    return lines


def describe_pod(state: ClusterState, pod: PodState, events: list[EventRow], now: float) -> str:
    obj = pod_object(state, pod)
    lines = [
        f"Name:             {pod.name}",
        f"Namespace:        {pod.namespace}",
        f"Node:             {pod.node}",
        f"Start Time:       {obj['status']['startTime']}",
        *kv_lines("Labels:           ", obj["metadata"].get("labels", {})),
        f"Status:           {pod_status(pod)}",
        f"Controlled By:    DaemonSet/{pod.owner_name}" if pod.owner_uid else "Controlled By:    <none>",
        "Conditions:",
        "  Type     Status",
        f"  Ready    {'True' if pod.ready else 'False'}",
        "Tolerations:      "
        + "\n                  ".join(toleration_text(t) for t in obj["spec"]["tolerations"]),
        *events_section(events, now),
    ]
    return "\n".join(lines) + "\n"


def describe_node(state: ClusterState, node: NodeState, events: list[EventRow], now: float) -> str:
    taints = "\n                    ".join(
        f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in node.taints
    )
    lines = [
        f"Name:               {node.name}",
        f"Roles:              {node_roles(node)}",
        *kv_lines("Labels:             ", dict(node.labels)),
        f"CreationTimestamp:  {rfc3339(node.created_at)}",
        "Taints:             " + (taints or "<none>"),
        f"Unschedulable:      {str(node.unschedulable).lower()}",
        "Conditions:",
        *(f"  {c.type:<20} {c.status:<7} {c.reason}" for c in node.conditions.values()),
        "Non-terminated Pods:",
        *(
            f"  {p.namespace:<14} {p.name}"
            for k in sorted(state.pods_by_node.get(node.name, ()))
            if not (p := state.pods[k]).terminal
        ),
        *events_section(events, now),
    ]
    return "\n".join(lines) + "\n"


# --- events, one line each (explain, audit, the live view) ---------------------------------------------


def log_time(when: datetime) -> str:
    """A store timestamp to the hundredth of a second, as explain and audit print them."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


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
