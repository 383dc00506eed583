"""Rolling-update budgets (docs/upstream-semantics.md A.9; upstream ``SurgeCount``, ``UnavailableCount``,
``updatedDesiredNodeCounts``):
int-or-percent scaled against desiredNumberScheduled, rounded up; both zero means maxUnavailable 1."""

from __future__ import annotations

from engine.core.scaling import BadIntOrPercent, scaled_value
from events.k8s import DaemonSetSpec

ROLLING_UPDATE = "RollingUpdate"
ON_DELETE = "OnDelete"


def surge_count(spec: DaemonSetSpec, total: int) -> int:
    strategy = spec.update_strategy
    ru = strategy.rolling_update
    if strategy.type != ROLLING_UPDATE or ru is None or ru.max_surge is None:
        return 0
    try:
        return scaled_value(ru.max_surge, total)
    except BadIntOrPercent:
        return 0


def unavailable_count(spec: DaemonSetSpec, total: int) -> int:
    strategy = spec.update_strategy
    ru = strategy.rolling_update
    if strategy.type != ROLLING_UPDATE or ru is None or ru.max_unavailable is None:
        return 0
    try:
        return scaled_value(ru.max_unavailable, total)
    except BadIntOrPercent:
        return 0


def allows_surge(spec: DaemonSetSpec) -> bool:
    return surge_count(spec, 1) != 0


def budgets(spec: DaemonSetSpec, desired: int) -> tuple[int, int]:
    """``(max_surge, max_unavailable)`` for ``desired`` nodes."""
    max_surge = surge_count(spec, desired)
    max_unavailable = unavailable_count(spec, desired)
    if desired > 0 and max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1
    return max_surge, max_unavailable
