"""``dsctl apply -f`` and ``dsctl delete daemonset`` (or ``delete -f``): DaemonSets (and the nodes a
manifest names) appended and deleted as kubectl would, with kubectl's output lines.

A delete is one ``daemonset.deleted`` event carrying the cascade policy; what becomes of the pods is
the reconciler's business, as upstream's garbage collector's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TextIO

from engine.cli.apply import Applier, current, parse
from engine.cli.nodes import delete_node
from engine.cli.sources import Gathered
from engine.core.arguments import parse_cascade
from engine.core.manifests import DaemonSetManifest
from engine.runtime.retry import Deadline
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, append_within
from events.envelope import wrap
from events.errors import NotFound
from events.subjects import daemonset_tree
from events.types import DaemonSetDeleted


async def apply_file(store: EventStore, text: str, namespace: str | None, out: TextIO) -> int:
    applier = Applier(store)
    for line in await applier.apply(text, namespace):
        print(line, file=out)
    return 0


async def delete_daemonset(store: EventStore, name: str, namespace: str, cascade: str, out: TextIO) -> int:
    policy = parse_cascade(cascade)
    tree = daemonset_tree(namespace, name)
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
    """Everything the manifest names, in its order: DaemonSets with ``cascade``, nodes removed."""
    for m in parse(text, namespace):
        if isinstance(m, DaemonSetManifest):
            await delete_daemonset(store, m.name, m.namespace, cascade, out)
        else:
            await delete_node(store, m.name, out)
    return 0


async def apply_gathered(store: EventStore, gathered: Gathered, namespace: str | None, out: TextIO) -> int:
    """``apply -f`` of files with foreign objects: the managed ones applied (all or nothing), every
    line (applied or skipped) printed in the order the objects came."""
    lines = await Applier(store).apply(gathered.text, namespace) if gathered.managed else []
    for line in gathered.lines(lines):
        print(line, file=out)
    return 0


async def delete_gathered(
    store: EventStore, gathered: Gathered, namespace: str | None, cascade: str, out: TextIO
) -> int:
    """``delete -f``: the managed objects deleted, the others reported skipped (after, since a
    delete prints as it goes)."""
    if gathered.managed:
        await delete_file(store, gathered.text, namespace, cascade, out)
    for line in gathered.entries:
        if line is not None:
            print(line, file=out)
    return 0
