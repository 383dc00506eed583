"""Envelopes for store tests: deterministic ids and times, a mix of event types and subjects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.envelope import Envelope, wrap
from events.ids import stable_id
from events.types import Event, NodeCordoned, NodeLabelsChanged, NodeRegistered, PodCreated, PodReady

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event_for(i: int, node: str | None = None) -> Event:
    node = node or f"node-{i % 7}"
    match i % 5:
        case 0:
            return NodeRegistered(name=node, labels={"i": str(i), "zone": f"z{i % 3}"})
        case 1:
            return NodeLabelsChanged(name=node, labels={"i": str(i)})
        case 2:
            return NodeCordoned(name=node)
        case 3:
            return PodCreated(namespace="default", name=f"pod-{i}", node=node, uid=stable_id("uid", i))
        case _:
            return PodReady(namespace="default", name=f"pod-{i}", node=node)


def envelope(event: Event, i: int, *, tag: str = "t") -> Envelope:
    return wrap(
        event,
        id=stable_id(tag, i),
        occurred_at=T0 + timedelta(milliseconds=i),
        source="tests",
    )


def envelopes(n: int, *, tag: str = "t", start: int = 0) -> list[Envelope]:
    return [envelope(event_for(i), i, tag=tag) for i in range(start, start + n)]
