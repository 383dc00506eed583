"""``dsctl label``, ``taint``, ``cordon``/``uncordon`` and ``delete node``: node edits with kubectl's
output lines (``node/NAME labeled``, ``not labeled`` when nothing changed, ...).

The arguments are parsed by ``engine.core.arguments``; the read-modify-append with its optimistic check
is ``engine.cli.operations.NodeOps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from engine.cli.operations import NodeOps
from engine.core.arguments import parse_label_args, parse_taint_args
from engine.store.event_store import EventStore
from events.errors import InvalidInput


async def label(store: EventStore, node: str, args: Sequence[str], overwrite: bool, out: TextIO) -> int:
    set_, remove = parse_label_args(args)
    if not set_ and not remove:
        raise InvalidInput("at least one label update is required", "LABELS")
    changed = await NodeOps(store).label(node, set_, remove, overwrite=overwrite)
    print(f"node/{node} {'labeled' if changed else 'not labeled'}", file=out)
    return 0


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


async def delete_node(store: EventStore, name: str, out: TextIO) -> int:
    await NodeOps(store).remove(name)
    print(f'node "{name}" deleted', file=out)
    return 0
