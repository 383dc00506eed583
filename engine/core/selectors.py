"""Label selectors (apimachinery ``metav1.LabelSelector``): matchLabels and matchExpressions, ANDed.

A ``None`` selector matches nothing and an empty one matches everything, as ``LabelSelectorAsSelector``
converts them. A selector with a malformed requirement (unknown operator, values where none belong)
matches nothing: upstream refuses to convert it, so nothing is selected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from events.k8s import LabelSelector, LabelSelectorRequirement

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def requirement_problems(req: LabelSelectorRequirement) -> list[tuple[str, str]]:
    """``(field, message)`` pairs, field relative to the requirement."""
    if req.operator not in SELECTOR_OPERATORS:
        return [("operator", f'Unsupported value: "{req.operator}": supported values: {_quoted()}')]
    if req.operator in ("In", "NotIn") and not req.values:
        return [("values", "must be specified when `operator` is 'In' or 'NotIn'")]
    if req.operator in ("Exists", "DoesNotExist") and req.values:
        return [("values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")]
    return []


def _quoted() -> str:
    return ", ".join(f'"{op}"' for op in SELECTOR_OPERATORS)


def is_empty(selector: LabelSelector | None) -> bool:
    return selector is not None and not selector.match_labels and not selector.match_expressions


def is_valid(selector: LabelSelector) -> bool:
    return not any(requirement_problems(r) for r in selector.match_expressions)


class Requirement(Protocol):
    """A label requirement: a selector's matchExpressions entry or a node selector's (same rules)."""

    @property
    def key(self) -> str: ...
    @property
    def operator(self) -> str: ...
    @property
    def values(self) -> tuple[str, ...]: ...


def requirement_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    """In, NotIn, Exists, DoesNotExist; anything else matches nothing."""
    present = req.key in labels
    match req.operator:
        case "In":
            return present and labels[req.key] in req.values
        case "NotIn":
            return not present or labels[req.key] not in req.values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present
        case _:
            return False


def matcher(selector: LabelSelector | None) -> Callable[[Mapping[str, str]], bool]:
    """``matches`` with the selector checked once, for matching many label sets (every owned pod)."""
    if selector is None or not is_valid(selector):
        return lambda labels: False
    wanted = tuple(selector.match_labels.items())
    exprs = selector.match_expressions

    def match(labels: Mapping[str, str]) -> bool:
        for k, v in wanted:
            if labels.get(k) != v:
                return False
        return all(requirement_matches(r, labels) for r in exprs) if exprs else True

    return match


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    if selector is None or not is_valid(selector):
        return False
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    return all(requirement_matches(r, labels) for r in selector.match_expressions)


def describe(selector: LabelSelector | None) -> str:
    """kubectl's rendering (``app=web,tier in (a,b)``), for messages."""
    if selector is None:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for r in selector.match_expressions:
        match r.operator:
            case "Exists":
                parts.append(r.key)
            case "DoesNotExist":
                parts.append(f"!{r.key}")
            case _:
                parts.append(f"{r.key} {r.operator.lower()} ({','.join(r.values)})")
    return ",".join(parts) or "<everything>"
