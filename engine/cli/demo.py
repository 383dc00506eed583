"""``dsctl up --demo``: three nodes and the seed manifests (``ops/demo/``), applied through the same
path as ``dsctl apply``. Seed 001's first myweb-ds shares its name with the walkthrough's and has a
different selector (immutable), so it goes into its own namespace, as ``kubectl apply -n`` would.

The demo is applied once per store (docs/deploy.md, "ops/up and the demo"): a seed file whose objects already
have an event from the demo's source (``dsctl-demo``) in the log was applied before, and is not applied
again, so restarting ``up --demo`` keeps whatever the user did since: a node relabelled, cordoned or
deleted, a DaemonSet edited or deleted. The log keeps every event (its limits are part of the log
contract), so the mark cannot age out; a file interrupted before its objects were appended is applied
at the next start.

The store is the caller's: ``dsctl up`` opens one as the admin role for it, since applying manifests
is an operator's act, not the engine's (whose role may append decisions only)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from engine.cli.apply import Applier, parse
from engine.cli.queries import readable
from engine.core.manifests import DaemonSetManifest, Manifest
from engine.store.port import EventStore
from events.subjects import daemonset_tree, node_tree

DEMO_DIR = Path(__file__).resolve().parents[2] / "ops" / "demo"
NAMESPACES = {"001-myweb-ds-labels.yaml": "labels-demo"}
#: the source of every event the demo appends: what marks a seed file as applied to a store
SOURCE = "dsctl-demo"
INDENT = " " * 10


def _tree(manifest: Manifest) -> str:
    if isinstance(manifest, DaemonSetManifest):
        return daemonset_tree(manifest.namespace, manifest.name)
    return node_tree(manifest.name)


async def applied_before(store: EventStore, text: str, namespace: str | None) -> bool:
    """Whether any object of the seed ``text`` has an event from the demo in the log (only those
    objects' own subjects are read: a few events each, however long the log)."""
    subjects = [_tree(m) for m in parse(text, namespace)]
    events = readable(store, subjects, [])  # a malformed event is passed over, as the projector does
    async with contextlib.aclosing(events):
        async for stored in events:
            if stored.envelope.source == SOURCE:
                return True
    return False


async def setup_demo(store: EventStore) -> None:
    applier = Applier(store, source=SOURCE)
    kept = []
    for path in sorted(DEMO_DIR.glob("*.yaml")):
        text, namespace = path.read_text(), NAMESPACES.get(path.name)
        if await applied_before(store, text, namespace):
            kept.append(path.name)
            continue
        for line in await applier.apply(text, namespace=namespace):
            print(f"{INDENT}{path.name}: {line}", flush=True)
    if kept:
        print(
            f"{INDENT}demo: {', '.join(kept)} applied to this store before; kept as they are now "
            "(a new --store starts the demo afresh)",
            flush=True,
        )
