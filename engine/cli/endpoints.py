"""``dsctl get endpoints ds/NAME [-o wide|json] [-w]``: each Ready pod's node address and host ports
(``engine.core.endpoints``, docs/rollout-control.md), for Service-less discovery of node agents.

Node addresses are not part of the read model (they decide nothing), so they are read here from the
nodes' own registrations (``dse.node.*.registered``: the last one of each node holds its current
``status.addresses``). ``-w`` prints the table, then a row for every endpoint that appears or changes
and a ``<gone>`` row for one that goes, until interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import TextIO

import msgspec

from engine.cli.queries import load_state, readable
from engine.core.endpoints import Endpoint, endpoints
from engine.store.event_store import EventStore
from events.errors import NotFound
from events.k8s import NodeAddress
from events.subjects import type_filter
from events.types import NodeRegistered
from projections.fold import apply
from projections.model import ClusterState

REGISTRATIONS = type_filter("node.registered")
HEADER = ("POD", "NODE", "ADDRESS", "PORTS")


async def node_addresses(store: EventStore) -> dict[str, tuple[NodeAddress, ...]]:
    found: dict[str, tuple[NodeAddress, ...]] = {}
    skipped: list[int] = []
    async for stored in readable(store, [REGISTRATIONS], skipped):
        event = stored.envelope.data
        if isinstance(event, NodeRegistered):
            found[event.name] = event.addresses
    return found


def _row(e: Endpoint, wide: bool) -> tuple[str, ...]:
    ports = ",".join(str(p) for p in e.ports) or "<none>"
    row: tuple[str, ...] = (e.pod, e.node, e.address or "<none>", ports)
    if wide:
        others = ",".join(f"{a.type}={a.address}" for a in e.addresses[1:]) or "<none>"
        row = (*row, e.revision, others)
    return row


def _table(rows: list[tuple[str, ...]], wide: bool) -> str:
    header = (*HEADER, "REVISION", "OTHER ADDRESSES") if wide else HEADER
    everything = [header, *rows]
    widths = [max(len(r[i]) for r in everything) for i in range(len(header))]
    return "".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in everything
    )


def _current(
    state: ClusterState, key: str, addresses: Mapping[str, tuple[NodeAddress, ...]]
) -> list[Endpoint]:
    ds = state.daemonsets.get(key)
    if ds is None:
        return []
    return endpoints(state, ds, addresses)


async def get_endpoints(
    store: EventStore,
    name: str,
    namespace: str,
    output: str,
    out: TextIO,
    watch: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    key = f"{namespace}/{name}"
    state = await load_state(store)
    if key not in state.daemonsets:
        raise NotFound(f'daemonsets.apps "{name}" not found')
    addresses = await node_addresses(store)
    found = _current(state, key, addresses)
    wide = output == "wide"
    if output == "json":
        out.write(json.dumps(msgspec.to_builtins(found), indent=2) + "\n")
    else:
        out.write(_table([_row(e, wide) for e in found], wide))
    out.flush()
    if not watch:
        return 0
    shown = {(e.node, e.pod): _row(e, wide) for e in found}

    async def follow() -> None:
        async with contextlib.aclosing(store.follow(state.seq + 1)) as events:
            async for stored in events:
                apply(state, stored.envelope, stored.seq)
                if isinstance(stored.envelope.data, NodeRegistered):
                    addresses[stored.envelope.data.name] = stored.envelope.data.addresses
                now = {(e.node, e.pod): _row(e, wide) for e in _current(state, key, addresses)}
                for ident, row in sorted(now.items()):
                    if shown.get(ident) != row:
                        out.write("   ".join(row) + "\n")
                for ident in sorted(set(shown) - set(now)):
                    out.write(f"{ident[1]}   {ident[0]}   <gone>\n")
                if now != shown:
                    out.flush()
                shown.clear()
                shown.update(now)

    following = asyncio.ensure_future(follow())
    stopping = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Event().wait())
    try:
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (following, stopping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return 0
