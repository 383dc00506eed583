"""What the console shows, as JSON-ready dicts computed from a ``ClusterState`` (pure: no I/O).

The fleet is nodes x DaemonSets, which at 5,000 nodes and 10 DaemonSets is 50,000 cells: too many for a
page to draw or a person to read. So the grid is aggregated: rows are the values of one node label
(the zone by default), each cell the counts of that group's nodes by state, and a group opens as a
list of its nodes, one page at a time (docs/console.md, "Fleet").

A cell's state, for one node and one DaemonSet, in the order a person cares about: ``failed``,
``missing`` (should run, no pod), ``pending`` (a pod not Ready yet), ``old`` (Ready at an older
revision), ``terminating``, ``ready`` (Ready at the current revision), ``none`` (does not run here).
"""

from __future__ import annotations

from typing import Any

from engine.core.budgets import unavailable_count
from engine.core.eligibility import node_should_run
from engine.core.status import rollout_complete
from projections.model import ClusterState, DaemonSetState, NodeState, PodState

STATES = ("failed", "missing", "pending", "old", "terminating", "ready", "none")
DEFAULT_GROUP = "topology.kubernetes.io/zone"
PAGE = 100

_Key = tuple[str, int, str, int]


class Eligibility:
    """Whether a DaemonSet should run on a node, remembered per (node version, DaemonSet generation):
    the check costs ~20 µs, and the grid asks 50,000 of them on every refresh."""

    def __init__(self, limit: int = 200_000) -> None:
        self._cache: dict[_Key, bool] = {}
        self._limit = limit

    def should_run(self, node: NodeState, ds: DaemonSetState) -> bool:
        key = (node.name, node.updated_seq, ds.uid, ds.generation)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            hit = self._cache[key] = node_should_run(node, ds.spec.template).should_run
        return hit


def _pods_on(state: ClusterState, node: str) -> dict[str, PodState]:
    """The node's pods by owner uid (a terminating pod gives way to a live one of the same owner)."""
    out: dict[str, PodState] = {}
    for key in state.pods_by_node.get(node, ()):
        pod = state.pods.get(key)
        if pod is None or not pod.owner_uid:
            continue
        seen = out.get(pod.owner_uid)
        if seen is None or (seen.deletion_timestamp is not None and pod.deletion_timestamp is None):
            out[pod.owner_uid] = pod
    return out


def cell(pod: PodState | None, ds: DaemonSetState, eligible: bool) -> str:
    if pod is None:
        return "missing" if eligible else "none"
    if pod.phase == "Failed":
        return "failed"
    if pod.deletion_timestamp is not None:
        return "terminating"
    if not pod.ready:
        return "pending"
    return "ready" if pod.revision_hash == ds.template_hash else "old"


def daemonset_summary(ds: DaemonSetState) -> dict[str, Any]:
    st = ds.status
    return {
        "key": f"{ds.namespace}/{ds.name}",
        "namespace": ds.namespace,
        "name": ds.name,
        "desired": st.desired_number_scheduled,
        "current": st.current_number_scheduled,
        "ready": st.number_ready,
        "updated": st.updated_number_scheduled,
        "available": st.number_available,
        "unavailable": st.number_unavailable,
        "generation": ds.generation,
        "observed": st.observed_generation,
        "revision": ds.revisions[ds.template_hash].number if ds.template_hash in ds.revisions else 0,
        "strategy": ds.spec.update_strategy.type,
        "complete": rollout_complete(ds, st),
    }


def _daemonsets(state: ClusterState) -> list[DaemonSetState]:
    return [state.daemonsets[k] for k in sorted(state.daemonsets)]


def _matching(state: ClusterState, search: str) -> list[NodeState]:
    nodes = [state.nodes[k] for k in sorted(state.nodes)]
    if not search:
        return nodes
    s = search.lower()
    return [
        n for n in nodes if s in n.name.lower() or any(s in f"{k}={v}".lower() for k, v in n.labels.items())
    ]


def fleet(
    state: ClusterState, elig: Eligibility, *, group: str = DEFAULT_GROUP, search: str = ""
) -> dict[str, Any]:
    """The grid: one row per value of the ``group`` label, one column per DaemonSet, counts per state."""
    dss = _daemonsets(state)
    rows: dict[str, dict[str, Any]] = {}
    for node in _matching(state, search):
        value = node.labels.get(group, "(none)") if group else "(all)"
        row = rows.get(value)
        if row is None:
            row = rows[value] = {"value": value, "nodes": 0, "cells": {}, "worst": "none"}
        row["nodes"] += 1
        pods = _pods_on(state, node.name)
        for ds in dss:
            pod = pods.get(ds.uid)
            state_ = cell(pod, ds, elig.should_run(node, ds) if pod is None else True)
            counts = row["cells"].setdefault(f"{ds.namespace}/{ds.name}", dict.fromkeys(STATES, 0))
            counts[state_] += 1
    for row in rows.values():
        row["worst"] = _worst(row["cells"].values())
    return {
        "seq": state.seq,
        "time": state.last_time,
        "group": group,
        "search": search,
        "nodes": len(state.nodes),
        "pods": len(state.pods),
        "in_flight": len(state.in_flight),
        "daemonsets": [daemonset_summary(ds) for ds in dss],
        "groups": [rows[k] for k in sorted(rows)],
        "states": list(STATES),
    }


def _worst(cells: Any) -> str:
    for s in STATES:
        if any(c[s] for c in cells):
            return s
    return "none"


def nodes_page(
    state: ClusterState,
    elig: Eligibility,
    *,
    group: str = DEFAULT_GROUP,
    value: str | None = None,
    search: str = "",
    page: int = 0,
    only: str = "",
) -> dict[str, Any]:
    """One page of nodes (of one group, matching a search, or in one state): a row per node, a cell
    per DaemonSet."""
    dss = _daemonsets(state)
    picked = []
    for node in _matching(state, search):
        if value is not None and (node.labels.get(group, "(none)") if group else "(all)") != value:
            continue
        pods = _pods_on(state, node.name)
        cells = []
        for ds in dss:
            pod = pods.get(ds.uid)
            s = cell(pod, ds, elig.should_run(node, ds) if pod is None else True)
            cells.append(
                {"state": s, "pod": pod.name if pod else "", "revision": pod.revision_hash if pod else ""}
            )
        if only and not any(c["state"] == only for c in cells):
            continue
        picked.append({"name": node.name, "unschedulable": node.unschedulable, "cells": cells})
    start = max(page, 0) * PAGE
    return {
        "seq": state.seq,
        "daemonsets": [f"{ds.namespace}/{ds.name}" for ds in dss],
        "total": len(picked),
        "page": page,
        "pages": (len(picked) + PAGE - 1) // PAGE,
        "nodes": picked[start : start + PAGE],
    }


def node_page(state: ClusterState, name: str) -> dict[str, Any] | None:
    """Every DaemonSet against one node: its pod (or why there is none), with each placement rule."""
    node = state.nodes.get(name)
    if node is None:
        return None
    pods = _pods_on(state, name)
    rows = []
    for ds in _daemonsets(state):
        e = node_should_run(node, ds.spec.template)
        pod = pods.get(ds.uid)
        rows.append(
            {
                "daemonset": f"{ds.namespace}/{ds.name}",
                "state": cell(pod, ds, e.should_run),
                "should_run": e.should_run,
                "why": "eligible" if e.should_run else f"{e.message} [{e.code}]",
                "checks": [{"rule": c.rule, "passed": c.passed, "message": c.message} for c in e.checks],
                "pod": None
                if pod is None
                else {
                    "name": pod.name,
                    "phase": pod.phase,
                    "ready": pod.ready,
                    "revision": pod.revision_hash,
                    "current": pod.revision_hash == ds.template_hash,
                    "terminating": pod.deletion_timestamp is not None,
                },
            }
        )
    return {
        "seq": state.seq,
        "name": name,
        "labels": node.labels,
        "taints": [
            f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in node.taints
        ],
        "unschedulable": node.unschedulable,
        "daemonsets": rows,
    }


def rollout_page(
    state: ClusterState, elig: Eligibility, key: str, *, limit: int = 200
) -> dict[str, Any] | None:
    """A DaemonSet's rollout: progress, the unavailability budget in use, and the nodes holding it back."""
    ds = state.daemonsets.get(key)
    if ds is None:
        return None
    summary = daemonset_summary(ds)
    budget = unavailable_count(ds.spec, summary["desired"])
    holding: list[dict[str, str]] = []
    counts = dict.fromkeys(STATES, 0)
    for name in sorted(state.nodes):
        node = state.nodes[name]
        pod = _pods_on(state, name).get(ds.uid)
        s = cell(pod, ds, elig.should_run(node, ds) if pod is None else True)
        counts[s] += 1
        if s in ("ready", "none"):
            continue
        why = {
            "failed": "the pod failed; it is replaced after its back-off",
            "missing": "should run here and has no pod yet",
            "pending": "the pod is not Ready yet, so it counts against the budget",
            "old": "Ready at an older revision: waits for the budget (or a delete, with OnDelete)",
            "terminating": "the old pod is being stopped",
        }[s]
        if len(holding) < limit:
            holding.append({"node": name, "state": s, "pod": pod.name if pod else "", "why": why})
    rolling = ds.spec.update_strategy.rolling_update
    return {
        "seq": state.seq,
        "daemonset": summary,
        "template_hash": ds.template_hash,
        "budget": {"max_unavailable": budget, "in_use": summary["unavailable"]},
        "paused": bool(rolling and rolling.paused),
        "counts": counts,
        "holding": holding,
        "holding_total": sum(counts[s] for s in STATES if s not in ("ready", "none")),
        "revisions": sorted(
            ({"number": r.number, "hash": r.hash, "cause": r.change_cause} for r in ds.revisions.values()),
            key=lambda r: int(r["number"]),
        ),
    }
