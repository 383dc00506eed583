"""``dsctl diff -f FILE...`` and ``dsctl apply --dry-run=server -f FILE...``: the placement preview of
docs/rollout-control.md, printed. ``-f`` is read as ``apply`` reads it (``engine/cli/sources.py``:
files, directories, ``-R``, ``-``, repeated); objects dsctl does not manage are left out of the preview
(``--strict`` refuses them, exit 2).

Nothing is appended: the manifests are judged against the state read from the log by the core's
``preview``, the same code that decides. Grouped counts come first (place / stop / replace / unchanged
/ ineligible); ``-o wide`` adds every node with every rule checked, ``-o json`` prints it all as data.
``diff`` exits as kubectl diff does: 0 no change, 1 changes, 2 an error (reported here, since the
CLI's usual error exit 1 would read as "changes").
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

import msgspec

from engine.cli.apply import parse
from engine.cli.queries import load_state
from engine.cli.sources import Gathered
from engine.core.preview import ACTIONS, Preview, preview
from engine.store.event_store import EventStore
from events.errors import DsctlError

#: ``diff``'s exit when something failed (kubectl diff: "> 1")
DIFF_ERROR = 2


async def previews(
    store: EventStore, text: str, namespace: str | None, clock: Callable[[], float] = time.time
) -> list[Preview]:
    manifests = parse(text, namespace)
    state = await load_state(store)
    return preview(state, manifests, clock())


def render(found: list[Preview], output: str, out: TextIO, suffix: str) -> None:
    if output == "json":
        out.write(json.dumps(msgspec.to_builtins(found), indent=2) + "\n")
        return
    for p in found:
        _, _, name = p.daemonset.partition("/")
        out.write(f"daemonset.apps/{name} {p.result}{suffix}\n")
        out.write("  " + "  ".join(f"{a} {p.counts[a]}" for a in ACTIONS) + "\n")
        if output == "wide":
            width = max((len(n.node) for n in p.nodes), default=4)
            for n in p.nodes:
                out.write(f"  {n.node:<{width}}  {n.action:<10}  {n.reasons[-1]}\n")
                for reason in n.reasons[:-1]:
                    out.write(f"  {'':<{width}}  {'':<10}    {reason}\n")


async def diff(
    store: EventStore,
    text: str,
    namespace: str | None,
    output: str,
    out: TextIO,
    err: TextIO = sys.stderr,
    clock: Callable[[], float] = time.time,
) -> int:
    """0: applying ``text`` would change nothing; 1: it would; ``DIFF_ERROR``: it could not be judged."""
    try:
        found = await previews(store, text, namespace, clock)
    except DsctlError as error:
        err.write(f"error: {error}\n")
        return DIFF_ERROR
    render(found, output, out, "")
    return 1 if any(p.changes for p in found) else 0


async def diff_gathered(
    store: EventStore,
    gather: Callable[[], Gathered],
    namespace: str | None,
    output: str,
    out: TextIO,
    err: TextIO = sys.stderr,
    clock: Callable[[], float] = time.time,
) -> int:
    """``diff`` of every ``-f``: reading and validating them is part of the judgement, so a bad file is
    ``DIFF_ERROR`` too. Nothing dsctl manages in them: no change."""
    try:
        gathered = gather()
    except DsctlError as error:
        err.write(f"error: {error}\n")
        return DIFF_ERROR
    if not gathered.managed:
        return 0
    return await diff(store, gathered.text, namespace, output, out, err, clock)


async def apply_dry_run(
    store: EventStore,
    text: str,
    namespace: str | None,
    output: str,
    out: TextIO,
    clock: Callable[[], float] = time.time,
) -> int:
    """``apply --dry-run=server``: what the apply would print, plus the preview; appends nothing."""
    render(await previews(store, text, namespace, clock), output, out, " (server dry run)")
    return 0
