"""The kubectl-style commands: each reads or appends through the store and prints like kubectl.

Every function returns an exit code and writes results to ``out``; expected failures raise
``DsctlError`` subclasses, which the CLI prints as ``error: ...`` with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import msgspec
import yaml

from engine.cli import present
from engine.cli.apply import Applier, current, ds_tree, parse
from engine.cli.operations import NodeOps, find_pod, request_pod_delete
from engine.cli.queries import load_state
from engine.core import selectors
from engine.core.revisions import retained_revisions, revision_by_number, rollback_template
from engine.core.status import rollout_complete
from engine.runtime.retry import Deadline
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, append_within
from events.envelope import wrap
from events.errors import ConflictError, InvalidInput, NotFound
from events.k8s import CHANGE_CAUSE_ANNOTATION, LabelSelector, PodTemplate, Taint
from events.subjects import PREFIX, token
from events.template_hash import template_hash
from events.types import DaemonSetApplied, DaemonSetDeleted, DecisionRecorded
from projections.model import ClusterState, DaemonSetState, NodeState, PodState

Output = Literal["table", "wide", "json", "yaml", "name"]
Kind = Literal["daemonsets", "pods", "nodes"]

KINDS: dict[str, Kind] = {
    "ds": "daemonsets",
    "daemonset": "daemonsets",
    "daemonsets": "daemonsets",
    "daemonset.apps": "daemonsets",
    "daemonsets.apps": "daemonsets",
    "po": "pods",
    "pod": "pods",
    "pods": "pods",
    "no": "nodes",
    "node": "nodes",
    "nodes": "nodes",
}
RESOURCE = {"daemonsets": "daemonsets.apps", "pods": "pods", "nodes": "nodes"}
NAME_PREFIX = {"daemonsets": "daemonset.apps", "pods": "pod", "nodes": "node"}


def kind_of(text: str) -> Kind:
    kind = KINDS.get(text.lower())
    if kind is None:
        raise InvalidInput(
            f'the server doesn\'t have a resource type "{text}" (use daemonsets, pods or nodes)', "TYPE"
        )
    return kind


def _dump(obj: Any, fmt: Output) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=4) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


# --- get ------------------------------------------------------------------------------------------


class Query(msgspec.Struct, kw_only=True):
    kind: Kind
    name: str | None = None
    namespace: str = "default"
    all_namespaces: bool = False
    selector: LabelSelector | None = None


def select(state: ClusterState, q: Query) -> list[Any]:
    def ns_ok(ns: str) -> bool:
        return q.all_namespaces or ns == q.namespace

    def labels_ok(labels: dict[str, str]) -> bool:  # no -l: everything (a nil selector would match nothing)
        return q.selector is None or selectors.matches(q.selector, labels)

    items: list[Any]
    if q.kind == "daemonsets":
        items = [
            ds for ds in state.daemonsets.values()
            if ns_ok(ds.namespace) and labels_ok(ds.labels)
        ]  # fmt: skip
        items.sort(key=lambda d: (d.namespace, d.name))
    elif q.kind == "pods":
        items = [p for p in state.pods.values() if ns_ok(p.namespace) and labels_ok(p.labels)]
        items.sort(key=lambda p: (p.namespace, p.name))
    else:
        items = [n for n in state.nodes.values() if labels_ok(n.labels)]
        items.sort(key=lambda n: n.name)
    if q.name is not None:
        items = [i for i in items if i.name == q.name]
    return items


def obj_of(state: ClusterState, kind: Kind, item: Any) -> dict[str, Any]:
    if kind == "daemonsets":
        return present.daemonset_object(item)
    if kind == "pods":
        return present.pod_object(state, item)
    return present.node_object(item)


def render(
    state: ClusterState, q: Query, items: list[Any], fmt: Output, now: float, *, header: bool = True
) -> str:
    if fmt in ("json", "yaml"):
        objs = [obj_of(state, q.kind, i) for i in items]
        return _dump(objs[0] if q.name is not None and objs else present.as_list(objs), fmt)
    if fmt == "name":
        return "".join(f"{NAME_PREFIX[q.kind]}/{i.name}\n" for i in items)
    wide = fmt == "wide"
    if q.kind == "daemonsets":
        text = present.ds_rows(items, now, namespaces=q.all_namespaces, wide=wide)
    elif q.kind == "pods":
        text = present.pod_rows(state, items, now, namespaces=q.all_namespaces, wide=wide)
    else:
        text = present.node_rows(items, now, wide=wide)
    if not header:
        return "".join(text.splitlines(keepends=True)[1:])
    return text


def _not_found(q: Query) -> NotFound:
    return NotFound(f'{RESOURCE[q.kind]} "{q.name}" not found')


async def get(
    store: EventStore,
    nc: Any,
    q: Query,
    fmt: Output,
    out: TextIO,
    err: TextIO,
    *,
    at: Any = None,
    watch: bool = False,
) -> int:
    state = await load_state(store, nc, at)
    now = state.last_time if at is not None else time.time()
    items = select(state, q)
    if q.name is not None and not items and not watch:
        raise _not_found(q)
    if not items and fmt not in ("json", "yaml"):
        where = "" if q.kind == "nodes" or q.all_namespaces else f" in {q.namespace} namespace"
        print(f"No resources found{where}.", file=err)
    else:
        out.write(render(state, q, items, fmt, now))
    out.flush()
    if not watch:
        return 0
    return await _watch(store, state, q, fmt, out)


async def _watch(store: EventStore, state: ClusterState, q: Query, fmt: Output, out: TextIO) -> int:
    """Print a row (or object) each time one of the selected objects changes, until interrupted."""
    from projections.fold import apply

    def snapshot_rows(now: float) -> dict[str, str]:
        rows = {}
        for item in select(state, q):
            rows[getattr(item, "name", "") + "/" + getattr(item, "namespace", "")] = render(
                state, msgspec.structs.replace(q, name=item.name), [item], fmt, now, header=False
            )
        return rows

    # changes are detected with a fixed clock (an AGE column ticking is not a change, as in kubectl)
    last = snapshot_rows(0.0)
    async with contextlib.aclosing(store.follow(state.seq + 1)) as events:
        async for stored in events:
            apply(state, stored.envelope, stored.seq)
            rows = snapshot_rows(0.0)
            changed = [key for key, row in rows.items() if last.get(key) != row]
            if changed:
                shown = snapshot_rows(time.time())
                for key in changed:
                    out.write(shown[key])
                out.flush()
            last = rows
    return 0


# --- describe -------------------------------------------------------------------------------------


def _kv_lines(title: str, mapping: dict[str, str], indent: int = 0) -> list[str]:
    pad = " " * indent
    if not mapping:
        return [f"{pad}{title}<none>"]
    items = sorted(mapping.items())
    lines = [f"{pad}{title}{items[0][0]}={items[0][1]}"]
    lines += [f"{pad}{' ' * len(title)}{k}={v}" for k, v in items[1:]]
    return lines


async def ds_events(
    store: EventStore, ds: DaemonSetState, limit: int = 20
) -> list[tuple[float, str, str, str]]:
    """(time, type, reason, message) from the DaemonSet's decisions, newest last, as kubectl events."""
    rows: list[tuple[float, str, str, str]] = []
    subject = f"{PREFIX}.decision.{token(ds.namespace)}.{token(ds.name)}"
    async with contextlib.aclosing(store.read(subjects=[subject])) as events:
        async for stored in events:
            d = stored.envelope.data
            if not isinstance(d, DecisionRecorded) or d.uid != ds.uid:
                continue
            t = stored.time.timestamp()
            for reason in d.reasons:
                if reason.action == "create":
                    rows.append((t, "Normal", "SuccessfulCreate", f"Created pod: {reason.pod}"))
                elif reason.action in ("delete", "evict"):
                    kind = "Warning" if reason.code in ("FailedDaemonPod",) else "Normal"
                    why = "FailedDaemonPod" if reason.code == "FailedDaemonPod" else "SuccessfulDelete"
                    rows.append((t, kind, why, f"Deleted pod: {reason.pod} ({reason.message})"))
    return rows[-limit:]


def _events_section(rows: list[tuple[float, str, str, str]], now: float) -> list[str]:
    if not rows:
        return ["Events:  <none>"]
    body = [[kind, reason, present.age(t, now), "daemonset-controller", msg] for t, kind, reason, msg in rows]
    dashes = ["----", "------", "----", "----", "-------"]
    text = present.table(["Type", "Reason", "Age", "From", "Message"], [dashes, *body])
    return ["Events:", *("  " + line for line in text.rstrip("\n").splitlines())]


def _template_lines(template: PodTemplate) -> list[str]:
    lines = ["Pod Template:"]
    lines += _kv_lines("  Labels:  ", dict(template.metadata.labels))
    if template.metadata.annotations:
        lines += _kv_lines("  Annotations:  ", dict(template.metadata.annotations))
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


async def describe(
    store: EventStore, nc: Any, kind: Kind, name: str, namespace: str, out: TextIO, *, at: Any = None
) -> int:
    state = await load_state(store, nc, at)
    now = state.last_time if at is not None else time.time()
    q = Query(kind=kind, name=name, namespace=namespace)
    items = select(state, q)
    if not items:
        raise _not_found(q)
    item = items[0]
    lines: list[str]
    if kind == "daemonsets":
        ds: DaemonSetState = item
        st = ds.status
        pods = [state.pods[k] for k in state.pods_by_owner.get(ds.uid, ())]
        phases = {
            ph: sum(1 for p in pods if p.phase == ph) for ph in ("Running", "Pending", "Succeeded", "Failed")
        }
        lines = [
            f"Name:           {ds.name}",
            f"Namespace:      {ds.namespace}",
            f"Selector:       {selectors.describe(ds.spec.selector)}",
            f"Node-Selector:  {present.node_selector_text(ds.spec.template)}",
            *_kv_lines("Labels:         ", dict(ds.labels)),
            *_kv_lines(
                "Annotations:    ",
                {**ds.annotations, "deprecated.daemonset.template.generation": str(ds.generation)},
            ),
            f"Update Strategy: {ds.spec.update_strategy.type}",
            f"Desired Number of Nodes Scheduled: {st.desired_number_scheduled}",
            f"Current Number of Nodes Scheduled: {st.current_number_scheduled}",
            f"Number of Nodes Scheduled with Up-to-date Pods: {st.updated_number_scheduled}",
            f"Number of Nodes Scheduled with Available Pods: {st.number_available}",
            f"Number of Nodes Misscheduled: {st.number_misscheduled}",
            f"Pods Status:  {phases['Running']} Running / {phases['Pending']} Waiting / "
            f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed",
            *_template_lines(ds.spec.template),
            *_events_section(await ds_events(store, ds), now),
        ]
    elif kind == "pods":
        pod: PodState = item
        obj = present.pod_object(state, pod)
        lines = [
            f"Name:             {pod.name}",
            f"Namespace:        {pod.namespace}",
            f"Node:             {pod.node}",
            f"Start Time:       {obj['status']['startTime']}",
            *_kv_lines("Labels:           ", obj["metadata"]["labels"]),
            f"Status:           {present.pod_status(pod)}",
            f"Controlled By:    DaemonSet/{pod.owner_name}" if pod.owner_uid else "Controlled By:    <none>",
            "Conditions:",
            "  Type     Status",
            f"  Ready    {'True' if pod.ready else 'False'}",
            "Tolerations:      "
            + "\n                  ".join(_toleration_text(t) for t in obj["spec"]["tolerations"]),
            *_events_section(await pod_events(store, pod), now),
        ]
    else:
        node: NodeState = item
        lines = [
            f"Name:               {node.name}",
            f"Roles:              {present.node_roles(node)}",
            *_kv_lines("Labels:             ", dict(node.labels)),
            f"CreationTimestamp:  {present.rfc3339(node.created_at)}",
            "Taints:             "
            + (
                "\n                    ".join(
                    f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in node.taints
                )
                or "<none>"
            ),
            f"Unschedulable:      {str(node.unschedulable).lower()}",
            "Conditions:",
            *(f"  {c.type:<20} {c.status:<7} {c.reason}" for c in node.conditions.values()),
            "Non-terminated Pods:",
            *(
                f"  {p.namespace:<14} {p.name}"
                for k in sorted(state.pods_by_node.get(node.name, ()))
                if not (p := state.pods[k]).terminal
            ),
            *_events_section(await node_events(store, node.name), now),
        ]
    out.write("\n".join(lines) + "\n")
    return 0


def _toleration_text(t: dict[str, Any]) -> str:
    effect = ":" + t["effect"] if t.get("effect") else ""
    return f"{t.get('key') or '<all>'}{effect} op={t.get('operator') or 'Equal'}"


async def pod_events(store: EventStore, pod: PodState) -> list[tuple[float, str, str, str]]:
    reasons = {
        "pod.created": (
            "Normal",
            "Scheduled",
            f"Successfully assigned {pod.namespace}/{pod.name} to {pod.node}",
        ),
        "pod.running": ("Normal", "Started", "Started container"),
        "pod.ready": ("Normal", "Ready", "Pod is Ready"),
        "pod.not_ready": ("Warning", "NotReady", "Pod is not Ready"),
        "pod.failed": ("Warning", "Failed", "Pod failed"),
        "pod.succeeded": ("Normal", "Completed", "Pod completed"),
        "pod.terminating": ("Normal", "Killing", "Stopping container"),
        "pod.deleted": ("Normal", "Deleted", "Pod deleted"),
        "pod.evicted": ("Warning", "Evicted", "Pod evicted"),
    }
    rows = []
    subject = f"{PREFIX}.pod.{token(pod.node)}.{token(pod.namespace)}.{token(pod.name)}.>"
    async with contextlib.aclosing(store.read(subjects=[subject])) as events:
        async for stored in events:
            kind, reason, msg = reasons.get(stored.envelope.type, ("Normal", stored.envelope.type, ""))
            extra = getattr(stored.envelope.data, "reason", "")
            rows.append((stored.time.timestamp(), kind, reason, f"{msg}: {extra}" if extra else msg))
    return rows


async def node_events(store: EventStore, name: str) -> list[tuple[float, str, str, str]]:
    rows = []
    async with contextlib.aclosing(store.read(subjects=[f"{PREFIX}.node.{token(name)}.>"])) as events:
        async for stored in events:
            rows.append(
                (stored.time.timestamp(), "Normal", stored.envelope.type, f"from {stored.envelope.source}")
            )
    return rows[-20:]


# --- apply / delete -------------------------------------------------------------------------------


async def apply_file(store: EventStore, text: str, namespace: str | None, out: TextIO) -> int:
    applier = Applier(store)
    for line in await applier.apply(text, namespace):
        print(line, file=out)
    return 0


CASCADE: dict[str, Literal["Background", "Foreground", "Orphan"]] = {
    "background": "Background",
    "true": "Background",
    "foreground": "Foreground",
    "orphan": "Orphan",
    "false": "Orphan",
}


async def delete_daemonset(store: EventStore, name: str, namespace: str, cascade: str, out: TextIO) -> int:
    policy = CASCADE.get(cascade.lower())
    if policy is None:
        raise InvalidInput(
            f"invalid cascade value {cascade!r} (use background, foreground or orphan)", "--cascade"
        )
    tree = ds_tree(namespace, name)
    state, last = await current(store, [tree])
    ds = state.daemonsets.get(f"{namespace}/{name}")
    if ds is None or ds.deleting:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    event = DaemonSetDeleted(namespace=namespace, name=name, uid=ds.uid, propagation_policy=policy)
    env = wrap(event, id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), source="dsctl")
    # a store briefly away (an election) is waited out; a lost ack is recognised, not a conflict
    await append_within(
        store, env, Deadline(DEFAULT_DEADLINE), expected_last_subject_seq=last, expected_subject_filter=tree
    )
    print(f'daemonset.apps "{name}" deleted', file=out)
    return 0


async def delete_file(store: EventStore, text: str, namespace: str | None, cascade: str, out: TextIO) -> int:
    from engine.core.manifests import DaemonSetManifest

    manifests = parse(text, namespace)
    for m in manifests:
        if isinstance(m, DaemonSetManifest):
            await delete_daemonset(store, m.name, m.namespace, cascade, out)
        else:
            await NodeOps(store).remove(m.name)
            print(f'node "{m.name}" deleted', file=out)
    return 0


async def delete_node(store: EventStore, name: str, out: TextIO) -> int:
    await NodeOps(store).remove(name)
    print(f'node "{name}" deleted', file=out)
    return 0


async def delete_pod(store: EventStore, nc: Any, name: str, namespace: str, out: TextIO) -> int:
    pod = await find_pod(store, name, namespace)
    await request_pod_delete(nc, pod)
    print(f'pod "{name}" deleted', file=out)
    return 0


# --- label / taint / cordon -----------------------------------------------------------------------


def parse_label_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    set_: dict[str, str] = {}
    remove: list[str] = []
    for a in args:
        if a.endswith("-") and "=" not in a:
            remove.append(a[:-1])
        elif "=" in a:
            k, _, v = a.partition("=")
            if not k:
                raise InvalidInput(f"invalid label spec {a!r}: empty key", a)
            set_[k] = v
        else:
            raise InvalidInput(f"invalid label spec {a!r}: use key=value to set, key- to remove", a)
    for k, v in set_.items():
        from engine.core import names

        problems = names.qualified_name(k) + names.label_value(v)
        if problems:
            raise InvalidInput(f"invalid label {k}={v}: {'; '.join(problems)}", k)
    return set_, remove


async def label(store: EventStore, node: str, args: Sequence[str], overwrite: bool, out: TextIO) -> int:
    set_, remove = parse_label_args(args)
    if not set_ and not remove:
        raise InvalidInput("at least one label update is required", "LABELS")
    changed = await NodeOps(store).label(node, set_, remove, overwrite=overwrite)
    print(f"node/{node} {'labeled' if changed else 'not labeled'}", file=out)
    return 0


EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def parse_taint_args(args: Sequence[str]) -> tuple[list[Taint], list[tuple[str, str]]]:
    add: list[Taint] = []
    remove: list[tuple[str, str]] = []
    for a in args:
        if a.endswith("-"):
            spec = a[:-1]
            key, _, effect = spec.partition(":")
            key = key.split("=", 1)[0]
            if effect and effect not in EFFECTS:
                raise InvalidInput(f"invalid taint effect {effect!r} in {a!r} (use {', '.join(EFFECTS)})", a)
            remove.append((key, effect))
            continue
        kv, sep, effect = a.partition(":")
        if not sep or effect not in EFFECTS:
            raise InvalidInput(
                f"invalid taint spec {a!r}: use key=value:Effect or key:Effect- ({', '.join(EFFECTS)})", a
            )
        key, _, value = kv.partition("=")
        if not key:
            raise InvalidInput(f"invalid taint spec {a!r}: empty key", a)
        add.append(Taint(key=key, value=value, effect=effect))
    return add, remove


async def taint(store: EventStore, node: str, args: Sequence[str], out: TextIO) -> int:
    add, remove = parse_taint_args(args)
    if not add and not remove:
        raise InvalidInput("at least one taint update is required", "TAINTS")
    changed = await NodeOps(store).taint(node, add, remove)
    word = "tainted" if add or not remove else "untainted"
    print(f"node/{node} {word if changed else 'not ' + word}", file=out)
    return 0


async def cordon(store: EventStore, node: str, on: bool, out: TextIO) -> int:
    changed = await NodeOps(store).cordon(node, on)
    word = "cordoned" if on else "uncordoned"
    print(f"node/{node} {word if changed else 'already ' + word}", file=out)
    return 0


# --- rollout --------------------------------------------------------------------------------------


def parse_ds_ref(text: str) -> str:
    kind, sep, name = text.partition("/")
    if not sep:
        raise InvalidInput(f"expected daemonset/NAME or ds/NAME, got {text!r}", "RESOURCE")
    if kind_of(kind) != "daemonsets":
        raise InvalidInput(f"rollout works on daemonsets only, not {kind!r}", "RESOURCE")
    if not name:
        raise InvalidInput("a name is required", "RESOURCE")
    return name


async def _ds_with_status(
    store: EventStore, namespace: str, name: str
) -> tuple[ClusterState, DaemonSetState, int]:
    subjects = [ds_tree(namespace, name), f"{PREFIX}.decision.{token(namespace)}.{token(name)}"]
    state, last = await current(store, subjects)
    ds = state.daemonsets.get(f"{namespace}/{name}")
    if ds is None:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    return state, ds, last


def parse_duration(text: str) -> float:
    """kubectl durations: ``30s``, ``5m``, ``1h``, ``1m30s``, or plain seconds; ``0`` means forever."""
    import re

    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise InvalidInput(f"invalid duration {text!r} (e.g. 30s, 5m, 1h30m)", "--timeout")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def rollout_message(ds: DaemonSetState) -> tuple[bool, str]:
    st = ds.status
    if st.observed_generation < ds.generation:
        return False, "Waiting for daemon set spec update to be observed...\n"
    desired = st.desired_number_scheduled
    if st.updated_number_scheduled < desired:
        return False, (
            f'Waiting for daemon set "{ds.name}" rollout to finish: '
            f"{st.updated_number_scheduled} out of {desired} new pods have been updated...\n"
        )
    if st.number_available < desired:
        return False, (
            f'Waiting for daemon set "{ds.name}" rollout to finish: '
            f"{st.number_available} of {desired} updated pods are available...\n"
        )
    return True, f'daemon set "{ds.name}" successfully rolled out\n'


async def rollout_status(store: EventStore, name: str, namespace: str, timeout: float, out: TextIO) -> int:
    from projections.fold import apply

    state, ds, last = await _ds_with_status(store, namespace, name)
    if ds.spec.update_strategy.type != "RollingUpdate":
        raise InvalidInput(
            "rollout status is only available for RollingUpdate strategy type", "spec.updateStrategy"
        )
    shown = ""

    def step() -> bool:
        nonlocal shown
        d = state.daemonsets.get(f"{namespace}/{name}")
        if d is None:
            raise NotFound(f'daemonsets.apps "{name}" not found')
        done, msg = rollout_message(d)
        if done and not rollout_complete(d, d.status):
            done = False
        if msg != shown:
            out.write(msg)
            out.flush()
            shown = msg
        return done

    if step():
        return 0
    subjects = [ds_tree(namespace, name), f"{PREFIX}.decision.{token(namespace)}.{token(name)}"]

    async def follow() -> None:
        async with contextlib.aclosing(store.follow(last + 1, subjects)) as events:
            async for stored in events:
                apply(state, stored.envelope, stored.seq)
                if step():
                    return

    try:
        await asyncio.wait_for(follow(), timeout=timeout if timeout > 0 else None)
    except TimeoutError:
        raise TimedOut("timed out waiting for the condition") from None
    return 0


class TimedOut(InvalidInput):
    pass


async def rollout_history(
    store: EventStore, name: str, namespace: str, revision: int | None, out: TextIO
) -> int:
    _state, ds, _ = await _ds_with_status(store, namespace, name)
    pods = await _owned_pods(store, ds)
    if revision:
        rev = revision_by_number(ds, revision)
        out.write(f"daemonset.apps/{name} with revision #{rev.number}\n")
        out.write("\n".join(_template_lines(rev.template)) + "\n")
        return 0
    out.write(f"daemonset.apps/{name}\n")
    out.write(present.revision_rows(retained_revisions(ds, pods)))
    return 0


async def _owned_pods(store: EventStore, ds: DaemonSetState) -> list[PodState]:
    state = await load_state(store)
    return [state.pods[k] for k in state.pods_by_owner.get(ds.uid, ())]


async def _rollout_read(store: EventStore, namespace: str, name: str) -> tuple[DaemonSetState, int]:
    """The DaemonSet a rollout command bases its new generation on, and the sequence its append must
    expect on the DaemonSet's subjects.

    The expected sequence comes from the first read, the DaemonSet (with its decisions, for the
    collision count) from a read after it: anything appended to the DaemonSet after the first read,
    even between the two, makes the append fail with a conflict. Re-reading the sequence just before
    appending would instead let a concurrent ``apply`` be overwritten by a generation computed from
    stale state (two applies with the same generation in the log)."""
    _, expected = await current(store, [ds_tree(namespace, name)])
    _, ds, _ = await _ds_with_status(store, namespace, name)
    if ds.deleting:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    return ds, expected


async def _reapply(
    store: EventStore,
    ds: DaemonSetState,
    expected: int,
    template: PodTemplate,
    annotations: dict[str, str] | None = None,
) -> None:
    """Append the next generation of ``ds`` with ``template``; ``expected`` is the sequence ``ds`` was
    read at (from ``_rollout_read``), so a concurrent change raises ConflictError instead of being
    overwritten."""
    spec = msgspec.structs.replace(ds.spec, template=template)
    event = DaemonSetApplied(
        namespace=ds.namespace,
        name=ds.name,
        uid=ds.uid,
        generation=ds.generation + 1,
        spec=spec,
        template_hash=template_hash(template, ds.collision_count),
        labels=dict(ds.labels),
        annotations=dict(annotations if annotations is not None else ds.annotations),
    )
    env = wrap(event, id=str(uuid.uuid4()), occurred_at=datetime.now(UTC), source="dsctl")
    tree = ds_tree(ds.namespace, ds.name)
    await append_within(
        store,
        env,
        Deadline(DEFAULT_DEADLINE),
        expected_last_subject_seq=expected,
        expected_subject_filter=tree,
    )


async def rollout_undo(store: EventStore, name: str, namespace: str, to_revision: int, out: TextIO) -> int:
    """Not retried on a conflict: "the previous revision" is relative to what the user saw, and a
    concurrent apply changes it; rolling back that apply unseen is not what was asked."""
    ds, expected = await _rollout_read(store, namespace, name)
    template = rollback_template(ds, to_revision)
    if template_hash(template, ds.collision_count) == ds.template_hash:
        rev = ds.revisions[ds.template_hash].number
        out.write(
            f"daemonset.apps/{name} skipped rollback (current template already matches revision {rev})\n"
        )
        return 0
    annotations = {k: v for k, v in ds.annotations.items() if k != CHANGE_CAUSE_ANNOTATION}
    try:
        await _reapply(store, ds, expected, template, annotations)
    except ConflictError as err:
        raise ConflictError(
            f'daemonsets.apps "{name}" changed while rolling back (nothing was written); '
            f"check `dsctl rollout history ds/{name}` and run the undo again ({err})"
        ) from err
    out.write(f"daemonset.apps/{name} rolled back\n")
    return 0


#: a restart means "new pods from the current template", whatever that is, so it re-reads and retries
RESTART_ATTEMPTS = 5


async def rollout_restart(
    store: EventStore, name: str, namespace: str, out: TextIO, clock: Callable[[], float] = time.time
) -> int:
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for attempt in range(1, RESTART_ATTEMPTS + 1):
        ds, expected = await _rollout_read(store, namespace, name)
        t = ds.spec.template
        meta = msgspec.structs.replace(
            t.metadata, annotations={**t.metadata.annotations, "kubectl.kubernetes.io/restartedAt": stamp}
        )
        try:
            await _reapply(store, ds, expected, msgspec.structs.replace(t, metadata=meta))
        except ConflictError as err:
            if attempt == RESTART_ATTEMPTS:
                raise ConflictError(
                    f'daemonsets.apps "{name}" kept changing during the restart '
                    f"({RESTART_ATTEMPTS} attempts, nothing was written): {err}"
                ) from err
            continue
        break
    out.write(f"daemonset.apps/{name} restarted\n")
    return 0
