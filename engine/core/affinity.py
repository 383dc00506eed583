"""Required node affinity, as component-helpers ``nodeaffinity.GetRequiredNodeAffinity(pod).Match``.

``nodeSelector`` (an AND of label equalities) and the required ``nodeSelectorTerms`` must both match.
Terms are ORed; inside a term, matchExpressions (labels) and matchFields (only ``metadata.name``) are
ANDed. An empty term is skipped and a term that does not parse (unknown operator, wrong number of
values) is dropped, so either can never match; the DaemonSet controller ignores the parse error itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from engine.core.selectors import requirement_matches
from events.k8s import NodeSelectorRequirement, NodeSelectorTerm

NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
FIELD_SELECTOR_OPERATORS = ("In", "NotIn")
#: the only field a matchFields requirement may name
NODE_NAME_FIELD = "metadata.name"


class AffinityResult(msgspec.Struct, frozen=True):
    matched: bool
    message: str


def expression_problem(req: NodeSelectorRequirement) -> str:
    """Why a matchExpressions requirement does not parse, or ``""``."""
    match req.operator:
        case "In" | "NotIn":
            return "" if req.values else "values must be non-empty for In and NotIn"
        case "Exists" | "DoesNotExist":
            return "values must be empty for Exists and DoesNotExist" if req.values else ""
        case "Gt" | "Lt":
            if len(req.values) != 1:
                return "values must have exactly one element for Gt and Lt"
            return "" if _as_int(req.values[0]) is not None else "value must be an integer for Gt and Lt"
        case _:
            return f'operator "{req.operator}" is not supported'


def field_problem(req: NodeSelectorRequirement) -> str:
    """Why a matchFields requirement does not parse, or ``""``."""
    if len(req.values) != 1:
        return "must have one element"
    if req.operator not in FIELD_SELECTOR_OPERATORS:
        return f'operator "{req.operator}" is not a valid selector operator'
    return ""


def _as_int(text: str) -> int | None:
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


def expression_matches(req: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """Label selector operators, plus Gt/Lt (node selectors only): integer comparisons."""
    if req.operator not in ("Gt", "Lt"):
        return requirement_matches(req, labels)
    if req.key not in labels or len(req.values) != 1:
        return False
    have, want = _as_int(labels[req.key]), _as_int(req.values[0])
    if have is None or want is None:
        return False
    return have > want if req.operator == "Gt" else have < want


def field_matches(req: NodeSelectorRequirement, node_name: str) -> bool:
    actual = node_name if req.key == NODE_NAME_FIELD else ""
    return (actual == req.values[0]) == (req.operator == "In")


def term_is_empty(term: NodeSelectorTerm) -> bool:
    return not term.match_expressions and not term.match_fields


def term_problem(term: NodeSelectorTerm) -> str:
    for req in term.match_expressions:
        if problem := expression_problem(req):
            return f"{req.key}: {problem}"
    for req in term.match_fields:
        if problem := field_problem(req):
            return f"{req.key}: {problem}"
    return ""


def term_matches(term: NodeSelectorTerm, node_name: str, labels: Mapping[str, str]) -> bool:
    if term_is_empty(term) or term_problem(term):
        return False
    return all(expression_matches(r, labels) for r in term.match_expressions) and all(
        field_matches(r, node_name) for r in term.match_fields
    )


def describe_requirement(req: NodeSelectorRequirement) -> str:
    if req.operator in ("Exists", "DoesNotExist"):
        return f"{req.key} {req.operator}"
    return f"{req.key} {req.operator} [{','.join(req.values)}]"


def describe_term(term: NodeSelectorTerm) -> str:
    parts = [describe_requirement(r) for r in (*term.match_expressions, *term.match_fields)]
    return " AND ".join(parts) or "<empty term>"


def match_node_selector(selector: Mapping[str, str], labels: Mapping[str, str]) -> AffinityResult:
    missing = [f"{k}={v}" for k, v in sorted(selector.items()) if labels.get(k) != v]
    if missing:
        return AffinityResult(False, f"node does not match nodeSelector {', '.join(missing)}")
    return AffinityResult(True, "node matches nodeSelector" if selector else "no nodeSelector")


def match_terms(
    terms: Sequence[NodeSelectorTerm] | None, node_name: str, labels: Mapping[str, str]
) -> AffinityResult:
    """``terms`` is None when the pod has no required node affinity at all (which matches every node)."""
    if terms is None:
        return AffinityResult(True, "no required node affinity")
    for i, term in enumerate(terms):
        if term_matches(term, node_name, labels):
            return AffinityResult(
                True, f"node matches required node affinity term {i} ({describe_term(term)})"
            )
    details = []
    for i, term in enumerate(terms):
        if term_is_empty(term):
            details.append(f"term {i} is empty")
        elif problem := term_problem(term):
            details.append(f"term {i} is invalid ({problem})")
        else:
            details.append(f"term {i} ({describe_term(term)}) does not match")
    return AffinityResult(False, "node does not match required node affinity: " + "; ".join(details))
