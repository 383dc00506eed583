"""``rollout undo|restart`` against a concurrent ``apply``, on a real nats-server.

Both commands read the DaemonSet, compute a new generation from what they read and append it with an
optimistic check on the DaemonSet's subjects. The check must use the sequence the command *read its
state at*: if it re-read the sequence just before appending, an ``apply`` landing in between would be
silently overwritten by a generation computed from stale state, and the log would hold two applies
with the same generation number.

The concurrent apply is made deterministic by a store that runs it right after the command's first
read finishes (the read the command bases its write on), before anything else the command does.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import pytest

from engine.cli.apply import Applier
from engine.cli.rollout import rollout_restart, rollout_undo
from engine.store.event_store import AppendResult, EventStore, StoredEvent
from events.envelope import Envelope
from events.errors import ConflictError
from events.subjects import daemonset_tree
from events.types import DaemonSetApplied

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MANIFEST = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: default}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      containers: [{{name: agent, image: "example/agent:{version}"}}]
"""


class ApplyAfterFirstRead:
    """The real store, except that once the first read has been consumed, ``hook`` runs (another
    user's ``apply``) before the caller sees the end of that read."""

    def __init__(self, inner: EventStore, hook: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self._hook = hook
        self.fired = False

    async def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        end_seq: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        events = self.inner.read(
            start_seq=start_seq, start_time=start_time, end_seq=end_seq, subjects=subjects
        )
        async with contextlib.aclosing(events):
            async for stored in events:
                yield stored
        if not self.fired:
            self.fired = True
            await self._hook()

    def follow(
        self, from_seq: int = 1, subjects: Sequence[str] | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        return self.inner.follow(from_seq, subjects)

    async def append(
        self,
        envelope: Envelope,
        *,
        expected_last_subject_seq: int | None = None,
        expected_last_seq: int | None = None,
        expected_subject_filter: str | None = None,
    ) -> AppendResult:
        return await self.inner.append(
            envelope,
            expected_last_subject_seq=expected_last_subject_seq,
            expected_last_seq=expected_last_seq,
            expected_subject_filter=expected_subject_filter,
        )

    async def append_many(self, envelopes: Sequence[Envelope]) -> list[AppendResult]:
        return await self.inner.append_many(envelopes)

    async def last_seq(self) -> int:
        return await self.inner.last_seq()

    async def get(self, seq: int) -> StoredEvent:
        return await self.inner.get(seq)

    async def close(self) -> None:
        """The inner store belongs to the fixture."""


async def applied(store: EventStore) -> list[DaemonSetApplied]:
    out: list[DaemonSetApplied] = []
    async with contextlib.aclosing(store.read(subjects=[daemonset_tree("default", "agent")])) as events:
        async for stored in events:
            if isinstance(stored.envelope.data, DaemonSetApplied):
                out.append(stored.envelope.data)
    return out


def image(event: DaemonSetApplied) -> str:
    return str(event.spec.template.spec["containers"][0]["image"])


async def two_versions(store: EventStore) -> Callable[[], Awaitable[None]]:
    """v1 then v2 applied; returns the concurrent apply of v3."""
    await Applier(store).apply(MANIFEST.format(version="1"))
    await Applier(store).apply(MANIFEST.format(version="2"))

    async def concurrent_apply() -> None:
        assert await Applier(store).apply(MANIFEST.format(version="3")) == ["daemonset.apps/agent configured"]

    return concurrent_apply


async def test_undo_does_not_overwrite_a_concurrent_apply(jetstream_store: Any) -> None:
    store: EventStore = jetstream_store
    racing = ApplyAfterFirstRead(store, await two_versions(store))
    with pytest.raises(ConflictError):
        await rollout_undo(racing, "agent", "default", 0, io.StringIO())
    assert racing.fired
    history = await applied(store)
    assert [e.generation for e in history] == [1, 2, 3], "no generation may be written twice"
    assert image(history[-1]) == "example/agent:3", "the concurrent apply stands"
    # re-run from fresh state: the undo now rolls back the apply it has seen
    out = io.StringIO()
    assert await rollout_undo(store, "agent", "default", 0, out) == 0
    history = await applied(store)
    assert [e.generation for e in history] == [1, 2, 3, 4]
    assert image(history[-1]) == "example/agent:2"


async def test_restart_retries_from_fresh_state_after_a_concurrent_apply(jetstream_store: Any) -> None:
    store: EventStore = jetstream_store
    racing = ApplyAfterFirstRead(store, await two_versions(store))
    out = io.StringIO()
    assert await rollout_restart(racing, "agent", "default", out, clock=lambda: 1_800_000_000.0) == 0
    assert out.getvalue() == "daemonset.apps/agent restarted\n"
    assert racing.fired
    history = await applied(store)
    assert [e.generation for e in history] == [1, 2, 3, 4], "no generation may be written twice"
    assert image(history[2]) == "example/agent:3"
    restarted = history[-1].spec.template
    assert image(history[-1]) == "example/agent:3", "the restart keeps the concurrent apply"
    assert restarted.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == "2027-01-15T08:00:00Z"
