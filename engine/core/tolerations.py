"""Taints, tolerations and the tolerations every daemon pod gets (docs/upstream-semantics.md A.2, A.3).

``tolerationSeconds`` is not looked at: the DaemonSet controller counts a time-limited toleration as
tolerating (eviction after the limit is the taint-eviction controller's business). The v1.35 alpha
``Gt``/``Lt`` toleration operators are treated as with their feature gate off: they never match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from events.k8s import Taint, Toleration

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"
TAINT_EFFECTS = (NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE)
TOLERATION_OPERATORS = ("", "Equal", "Exists")

_ALWAYS = (
    Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect=NO_EXECUTE),
    Toleration(key="node.kubernetes.io/unreachable", operator="Exists", effect=NO_EXECUTE),
    Toleration(key="node.kubernetes.io/disk-pressure", operator="Exists", effect=NO_SCHEDULE),
    Toleration(key="node.kubernetes.io/memory-pressure", operator="Exists", effect=NO_SCHEDULE),
    Toleration(key="node.kubernetes.io/pid-pressure", operator="Exists", effect=NO_SCHEDULE),
    Toleration(key="node.kubernetes.io/unschedulable", operator="Exists", effect=NO_SCHEDULE),
)
_HOST_NETWORK = Toleration(
    key="node.kubernetes.io/network-unavailable", operator="Exists", effect=NO_SCHEDULE
)


def automatic_tolerations(host_network: bool) -> tuple[Toleration, ...]:
    """The controller's own tolerations, in the order upstream adds them."""
    return (*_ALWAYS, _HOST_NETWORK) if host_network else _ALWAYS


def _same_identity(a: Toleration, b: Toleration) -> bool:
    return a.key == b.key and a.operator == b.operator and a.value == b.value and a.effect == b.effect


def add_or_update(tolerations: Sequence[Toleration], toleration: Toleration) -> tuple[Toleration, ...]:
    """``AddOrUpdateTolerationInPodSpec``: a toleration equal in key, operator, value and effect is
    replaced in place (so a user's ``tolerationSeconds`` on not-ready goes away); otherwise appended."""
    result: list[Toleration] = []
    replaced = False
    for existing in tolerations:
        if _same_identity(existing, toleration):
            result.append(toleration)
            replaced = True
        else:
            result.append(existing)
    if not replaced:
        result.append(toleration)
    return tuple(result)


def with_daemon_tolerations(tolerations: Sequence[Toleration], host_network: bool) -> tuple[Toleration, ...]:
    result = tuple(tolerations)
    for toleration in automatic_tolerations(host_network):
        result = add_or_update(result, toleration)
    return result


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """core ``Toleration.ToleratesTaint``."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    match toleration.operator:
        case "" | "Equal":
            return toleration.value == taint.value
        case "Exists":
            return True
        case _:
            return False


def first_untolerated(
    taints: Sequence[Taint], tolerations: Sequence[Toleration], include: Callable[[Taint], bool]
) -> Taint | None:
    """``FindMatchingUntoleratedTaint``: the first taint passing ``include`` that nothing tolerates."""
    for taint in taints:
        if include(taint) and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def describe_taint(taint: Taint) -> str:
    value = f"={taint.value}" if taint.value else ""
    return f"{taint.key}{value}:{taint.effect}"
