"""``dsctl get`` of several things at once, as kubectl: ``get ds,nodes`` (one table per type, a blank
line between), ``get ds a b`` (one table, the rows in the order named), ``get ds/a node/n1``; with
``-o json|yaml`` one List holding every item, with ``-o name`` one line per object.

One type with at most one name is ``engine.cli.get.get`` itself (the query service first, ``-w``).
Several types call it once per type; several names of a type are selected from one state here with
``get``'s own ``select`` and ``render``. A name that is not found is reported (``error: ...`` on stderr)
after the others are printed, and the exit is 1, as kubectl's.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any, TextIO

import yaml

from engine.cli import get, present
from engine.cli.queries import load_state
from engine.core.arguments import Target
from engine.store.event_store import EventStore
from events.errors import DsctlError, InvalidInput
from events.k8s import LabelSelector


class Listing:
    """What every type of one ``get`` shares: where, which labels, the format, the point in the log."""

    def __init__(
        self,
        *,
        namespace: str,
        all_namespaces: bool,
        selector: LabelSelector | None,
        fmt: str,
        at: int | Any = None,
        show_labels: bool = False,
        no_headers: bool = False,
        sort_by: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.all_namespaces = all_namespaces
        self.selector = selector
        self.fmt = fmt
        self.at = at
        self.show_labels = show_labels
        self.no_headers = no_headers
        self.sort_by = sort_by

    def query(self, target: Target, name: str | None = None) -> get.Query:
        return get.Query(
            kind=target.kind,
            name=name,
            namespace=self.namespace,
            all_namespaces=self.all_namespaces,
            selector=self.selector,
        )


async def get_targets(
    store: EventStore,
    nc: Any,
    targets: list[Target],
    listing: Listing,
    out: TextIO,
    err: TextIO = sys.stderr,
    *,
    watch: bool = False,
) -> int:
    if len(targets) == 1 and len(targets[0].names) <= 1:
        t = targets[0]
        q = listing.query(t, t.names[0] if t.names else None)
        return await _one(store, nc, q, listing, out, err, watch=watch)
    if watch:
        raise InvalidInput("-w follows one type and at most one name; use -l to pick several", "--watch")
    outputs: list[str] = []
    failures: list[str] = []
    for target in targets:
        buffer = io.StringIO()
        try:
            if len(target.names) <= 1:
                q = listing.query(target, target.names[0] if target.names else None)
                await _one(store, nc, q, listing, buffer, err)
            else:
                failures += await _named(store, nc, target, listing, buffer)
        except DsctlError as error:
            failures.append(str(error))
        if buffer.getvalue():
            outputs.append(buffer.getvalue())
    out.write(_joined(outputs, listing.fmt))
    out.flush()
    for failure in failures:
        print(f"error: {failure}", file=err)
    return 1 if failures else 0


async def _one(
    store: EventStore,
    nc: Any,
    q: get.Query,
    listing: Listing,
    out: TextIO,
    err: TextIO,
    *,
    watch: bool = False,
) -> int:
    return await get.get(
        store,
        nc,
        q,
        listing.fmt,
        out,
        err,
        at=listing.at,
        watch=watch,
        show_labels=listing.show_labels,
        no_headers=listing.no_headers,
        sort_by=listing.sort_by,
    )


async def _named(store: EventStore, nc: Any, target: Target, listing: Listing, out: TextIO) -> list[str]:
    """Several names of one type as one table (or List), in the order named (``--sort-by`` sorts them);
    the missing ones returned."""
    state = await load_state(store, nc, listing.at)
    now = state.last_time if listing.at is not None else time.time()
    every = get.select(state, listing.query(target))
    items = [i for name in target.names for i in every if i.name == name]
    missing = [name for name in target.names if not any(i.name == name for i in every)]
    if listing.sort_by and len(items) > 1:
        items = get.sort_items(state, listing.query(target), items, listing.sort_by)
    if items:
        q = listing.query(target)
        header = not listing.no_headers
        out.write(
            get.render(state, q, items, listing.fmt, now, header=header, show_labels=listing.show_labels)
        )
    return [str(get.not_found(listing.query(target, name))) for name in missing]


def _joined(outputs: list[str], fmt: str) -> str:
    """kubectl's join: one List for json/yaml, lines for name and jsonpath, a blank line between
    tables."""
    if fmt in ("json", "yaml"):
        items: list[Any] = []
        for text in outputs:
            obj = json.loads(text) if fmt == "json" else yaml.safe_load(text)
            items += obj.get("items", []) if obj.get("kind") == "List" else [obj]
        return get.dump(present.as_list(items), fmt)
    if fmt == "name" or fmt.startswith("jsonpath="):
        return "".join(outputs)
    return "\n".join(outputs)
