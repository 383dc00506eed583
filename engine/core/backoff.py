"""Failed-pod backoff per node: kube-controller-manager's ``flowcontrol.Backoff`` for DaemonSets
(docs/upstream-semantics.md A.5).

Upstream keys it ``<ds uid>/<observedGeneration>/<node>``; here the read model keys it by node inside the
DaemonSet and stores the generation, so a new generation resets it the same way. The delay starts at 1 s,
doubles, and stops at 15 min. Upstream forgets an entry not touched for twice the maximum (its 1-minute GC
removes it); here the same age test is made when the entry is read, which gives the same answers
without a timer.
"""

from __future__ import annotations

import msgspec

from projections.model import Backoff

INITIAL_DELAY = 1.0
MAX_DELAY = 15 * 60.0


class BackoffStep(msgspec.Struct, frozen=True):
    delay_seconds: float
    until: float


def _current(entry: Backoff | None, generation: int, now: float) -> Backoff | None:
    if entry is None or entry.generation != generation:
        return None
    last_update = entry.until - entry.delay_seconds
    if now - last_update > 2 * MAX_DELAY:
        return None
    return entry


def remaining(entry: Backoff | None, generation: int, now: float) -> float | None:
    """Seconds left if the node is still backing off (``IsInBackOffSinceUpdate``), else None."""
    current = _current(entry, generation, now)
    if current is None or now >= current.until:
        return None
    return current.until - now


def advance(entry: Backoff | None, generation: int, now: float) -> BackoffStep:
    """``Backoff.Next``: the delay that starts now."""
    current = _current(entry, generation, now)
    delay = INITIAL_DELAY if current is None else min(current.delay_seconds * 2, MAX_DELAY)
    return BackoffStep(delay_seconds=delay, until=now + delay)
