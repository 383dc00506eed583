"""Replay: fold a sequence of stored events into a state, optionally stopping at a sequence or time."""

from __future__ import annotations

from collections.abc import Iterable

from events.envelope import Envelope
from projections.fold import apply
from projections.model import ClusterState


def replay(
    events: Iterable[tuple[int, Envelope]],
    state: ClusterState | None = None,
    *,
    until_seq: int | None = None,
    until_time: float | None = None,
) -> ClusterState:
    """Fold ``(seq, envelope)`` pairs in order. Events at or before ``state.seq`` are skipped, so a
    snapshot plus an overlapping tail is safe."""
    st = state if state is not None else ClusterState()
    for seq, env in events:
        if seq <= st.seq:
            continue
        if until_seq is not None and seq > until_seq:
            break
        if until_time is not None and env.occurred_at.timestamp() > until_time:
            break
        apply(st, env, seq)
    return st
