"""``apply``: manifests in, events appended, kubectl's ``created|configured|unchanged`` out.

Every object is checked before anything is appended, so an invalid document anywhere in the input
appends nothing (kubectl would have applied the valid ones before it; we prefer all-or-nothing, since
the log cannot take a half-apply back). Each append is optimistic: it carries the last sequence seen on
that object's subjects, so two users applying the same DaemonSet at once cannot both base a generation
on the same predecessor; the loser gets ConflictError and simply re-runs.

A store that is briefly away (a server restart, a stream leader election) is waited for: every read and
append of one ``apply`` shares one deadline (``DEFAULT_DEADLINE``, 15 s), transient failures are
retried within it, and past it the error says how long we waited and why. If that happens after some
objects were appended, the error lists them; the event ids are derived from the content and the
expected sequence, so re-running the same apply appends the rest and reports the others unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from engine.cli.queries import readable
from engine.core.documents import load_documents
from engine.core.manifests import DaemonSetManifest, Manifest, apply_daemonset, parse_object
from engine.runtime.retry import Deadline
from engine.store.event_store import DEFAULT_DEADLINE, EventStore, append_within, retry_transient
from events.envelope import wrap
from events.errors import DeadlineExceeded
from events.ids import stable_id
from events.subjects import daemonset_tree, node_tree
from events.types import Event, NodeRegistered
from projections.fold import apply as fold
from projections.model import ClusterState, NodeState

Clock = Callable[[], float]


async def current(
    store: EventStore, subjects: list[str], deadline: Deadline | None = None
) -> tuple[ClusterState, int]:
    """The state folded from one object's own subjects, and the last sequence among them. A read that
    fails transiently starts over (within ``deadline``, 15 s when not given): reads change nothing."""

    async def read() -> tuple[ClusterState, int]:
        state = ClusterState()
        last = 0
        skipped: list[int] = []
        async for stored in readable(store, subjects, skipped):
            fold(state, stored.envelope, stored.seq)
            last = stored.seq
        # a malformed message on these subjects is passed over (the projector does the same), but it
        # still counts as the last sequence an optimistic append must expect
        return state, max([last, *skipped])

    return await retry_transient(f"read {', '.join(subjects)}", read, deadline or Deadline(DEFAULT_DEADLINE))


def _node_unchanged(node: NodeState, event: NodeRegistered) -> bool:
    return (
        node.labels == event.labels
        and list(node.taints) == list(event.taints)
        and node.unschedulable == event.unschedulable
        and node.conditions == {c.type: c for c in event.conditions}
        and node.capacity == event.capacity
    )


def parse(text: str, namespace: str | None = None) -> list[Manifest]:
    """Every object in ``text``, validated; raises ManifestInvalid (naming the document) on the first
    invalid one."""
    manifests = []
    for i, doc in enumerate(load_documents(text)):
        meta = doc.get("metadata")
        if (
            namespace
            and doc.get("kind") == "DaemonSet"
            and isinstance(meta, dict)
            and not meta.get("namespace")
        ):
            doc = {**doc, "metadata": {**meta, "namespace": namespace}}
        manifests.append(parse_object(doc, i))
    return manifests


class Applier:
    def __init__(
        self,
        store: EventStore,
        *,
        source: str = "dsctl",
        clock: Clock | None = None,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self.store = store
        self.source = source
        self._clock = clock
        #: how long one apply waits for a store that is away (see the module docstring)
        self.deadline = deadline

    def _now(self) -> datetime:
        if self._clock is not None:
            return datetime.fromtimestamp(self._clock(), UTC)
        return datetime.now(UTC)

    async def plan(
        self, text: str, namespace: str | None = None, deadline: Deadline | None = None
    ) -> list[tuple[str, Event | None, str, int]]:
        """(line, event to append or None if unchanged, subject tree, expected last seq) per object.

        ``namespace`` is the default for objects that name none (``kubectl apply -n``)."""
        deadline = deadline or Deadline(self.deadline)
        out: list[tuple[str, Event | None, str, int]] = []
        for manifest in parse(text, namespace):
            if isinstance(manifest, DaemonSetManifest):
                tree = daemonset_tree(manifest.namespace, manifest.name)
                state, last = await current(self.store, [tree], deadline)
                outcome = apply_daemonset(manifest, state.daemonsets.get(manifest.key), uid=str(uuid.uuid4()))
                line = f"daemonset.apps/{manifest.name} {outcome.result}"
                out.append((line, None if outcome.result == "unchanged" else outcome.event, tree, last))
            else:
                tree = node_tree(manifest.name)
                state, last = await current(self.store, [tree], deadline)
                node = state.nodes.get(manifest.name)
                if node is None:
                    out.append((f"node/{manifest.name} created", manifest, tree, last))
                elif _node_unchanged(node, manifest):
                    out.append((f"node/{manifest.name} unchanged", None, tree, last))
                else:
                    out.append((f"node/{manifest.name} configured", manifest, tree, last))
        return out

    async def apply(self, text: str, namespace: str | None = None) -> list[str]:
        deadline = Deadline(self.deadline)
        planned = await self.plan(text, namespace, deadline)
        lines: list[str] = []
        appended: list[str] = []
        for line, event, tree, last in planned:
            if event is not None:
                try:
                    await self.append(event, tree, last, deadline)
                except DeadlineExceeded as err:
                    if not appended:
                        raise
                    # the log cannot take those back: say what is in, and that a re-run finishes it
                    raise DeadlineExceeded(
                        f"{err}; already appended: {', '.join(appended)}; "
                        "running the same apply again is safe"
                    ) from err
                appended.append(line)
            lines.append(line)
        return lines

    async def append(self, event: Event, tree: str, expected: int, deadline: Deadline | None = None) -> int:
        body = msgspec.json.encode(event)
        env = wrap(
            event,
            id=stable_id("apply", event.TAG, tree, expected, body.decode()),
            occurred_at=self._now(),
            source=self.source,
        )
        result = await append_within(
            self.store,
            env,
            deadline or Deadline(self.deadline),
            expected_last_subject_seq=expected,
            expected_subject_filter=tree,
        )
        return result.seq
