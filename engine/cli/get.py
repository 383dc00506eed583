"""``dsctl get``: the read model listed like ``kubectl get`` (tables, ``-o wide|json|yaml|name``), at
any point of the log with ``--at``, or followed with ``-w``.

Selecting what to show is shared with ``describe`` (``Query``, ``select``, ``not_found``); how it looks is
``engine.cli.present``.

The present is asked of a running engine's query service first (``engine.cli.remote``): the same code
on its live projection, answered in milliseconds instead of a rebuild from the log; ``--at`` the past,
no engine answering, or ``DSCTL_QUERY=log`` read the log. ``-w`` lists, then follows the log itself
(docs/console.md, "The query service").
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Literal, TextIO

import msgspec
import yaml

from engine.cli import present
from engine.cli.queries import answering, load_state
from engine.cli.remote import via_service
from engine.core import selectors
from engine.core.arguments import Kind
from engine.store.event_store import EventStore
from events.errors import NotFound
from events.k8s import LabelSelector
from projections.fold import apply
from projections.model import ClusterState

Output = Literal["table", "wide", "json", "yaml", "name"]

#: how kubectl names each kind in "not found" errors and in ``-o name``
RESOURCE = {"daemonsets": "daemonsets.apps", "pods": "pods", "nodes": "nodes"}
NAME_PREFIX = {"daemonsets": "daemonset.apps", "pods": "pod", "nodes": "node"}


class Query(msgspec.Struct, kw_only=True):
    kind: Kind
    name: str | None = None
    namespace: str = "default"
    all_namespaces: bool = False
    selector: LabelSelector | None = None


def _by_namespace_and_name(item: Any) -> str:
    """(namespace, name) order as one string: names never hold NUL, which sorts below every character;
    a string compares in C where a tuple compares item by item (50,000 pods: 39 ms against 100 ms)."""
    key: str = item.namespace + "\x00" + item.name
    return key


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
        items.sort(key=_by_namespace_and_name)
    elif q.kind == "pods":
        if q.all_namespaces and q.selector is None:
            items = list(state.pods.values())
        else:
            items = [p for p in state.pods.values() if ns_ok(p.namespace) and labels_ok(p.labels)]
        items.sort(key=_by_namespace_and_name)
    else:
        items = [n for n in state.nodes.values() if labels_ok(n.labels)]
        items.sort(key=lambda n: n.name)
    if q.name is not None:
        items = [i for i in items if i.name == q.name]
    return items


def not_found(q: Query) -> NotFound:
    return NotFound(f'{RESOURCE[q.kind]} "{q.name}" not found')


def _dump(obj: Any, fmt: Output) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=4) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


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
        if not items:
            return ""
        prefix = f"{NAME_PREFIX[q.kind]}/"
        return prefix + ("\n" + prefix).join([i.name for i in items]) + "\n"
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
    if at is None and not watch and not answering():
        args = {"query": msgspec.to_builtins(q), "fmt": fmt}
        code = await via_service(nc, store, "get", args, out, err)
        if code is not None:
            return code
    state = await load_state(store, nc, at)
    now = state.last_time if at is not None else time.time()
    items = select(state, q)
    if q.name is not None and not items and not watch:
        raise not_found(q)
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
