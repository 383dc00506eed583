"""``dsctl up --demo``: three nodes and the seed manifests (``ops/demo/``), applied through the same
path as ``dsctl apply``. Seed 001's first myweb-ds shares its name with the walkthrough's and has a
different selector (immutable), so it goes into its own namespace, as ``kubectl apply -n`` would.

The store is the caller's: ``dsctl up`` opens one as the admin role for it, since applying manifests
is an operator's act, not the engine's (whose role may append decisions only)."""

from __future__ import annotations

from pathlib import Path

from engine.cli.apply import Applier
from engine.store.port import EventStore

DEMO_DIR = Path(__file__).resolve().parents[2] / "ops" / "demo"
NAMESPACES = {"001-myweb-ds-labels.yaml": "labels-demo"}


async def setup_demo(store: EventStore) -> None:
    applier = Applier(store, source="dsctl-demo")
    for path in sorted(DEMO_DIR.glob("*.yaml")):
        for line in await applier.apply(path.read_text(), namespace=NAMESPACES.get(path.name)):
            print(f"          {path.name}: {line}", flush=True)
