"""``dsctl explain``: why a pod is where it is, or why a DaemonSet does (not) run on a node, from the log.

- ``explain pod`` follows one pod's chain: the inputs in effect when it was decided, the decision and
  its reason for that node, the command, and every report its executor sent.
- ``explain node`` checks every placement rule of one DaemonSet against one node, now (or ``--at`` a
  point of the past, judged by that state's own clock).
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from engine.cli.present import log_time, summarize
from engine.cli.queries import load_state
from engine.core.arguments import parse_namespaced
from engine.core.eligibility import node_should_run
from engine.core.reconcile import reconcile
from engine.store.event_store import EventStore, StoredEvent
from events.errors import NotFound
from events.subjects import daemonset_filters, decision_subject, node_filters, pod_filters
from events.types import CreatePod, DecisionRecorded, PodCreated
from projections.model import ClusterState


def _line(stored: StoredEvent, text: str) -> str:
    return f"  [seq {stored.seq} {log_time(stored.time)} {stored.envelope.source}] {text}"


async def _events(store: EventStore, subjects: list[str], end_seq: int | None = None) -> list[StoredEvent]:
    out = []
    async with contextlib.aclosing(store.read(subjects=subjects, end_seq=end_seq)) as events:
        async for stored in events:
            out.append(stored)
    return out


async def explain_pod(store: EventStore, name: str, namespace: str, out: TextIO) -> int:
    reports = await _events(store, pod_filters(name, namespace))
    created = next((s for s in reports if isinstance(s.envelope.data, PodCreated)), None)
    if created is None:
        raise NotFound(f'pods "{name}" not found in namespace {namespace} (no pod.created in the log)')
    pod = created.envelope.data
    assert isinstance(pod, PodCreated)
    out.write(f"pod {namespace}/{name} on node {pod.node}\n")
    decision_stored: StoredEvent | None = None
    decision: DecisionRecorded | None = None
    if pod.owner_name:
        for stored in await _events(store, [decision_subject(namespace, pod.owner_name)]):
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
            for s in await _events(store, [decision_subject(namespace, pod.owner_name)])
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
    ns, name = parse_namespaced(ds_ref)
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
