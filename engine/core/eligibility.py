"""``NodeShouldRunDaemonPod``: may a daemon pod start on a node, and may one already there stay
(docs/upstream-semantics.md A.2)?

The answer carries an explanation: each rule upstream checks (template nodeName, nodeSelector, required
node affinity, taints), whether it passed, and the first that failed as a machine code plus a sentence,
which is what ``dsctl explain`` prints. As upstream, nothing else is checked: not resources, host ports,
pod affinity, node conditions or ``spec.unschedulable`` (only taints count; the automatic tolerations
cover cordoned, not-ready, unreachable and pressured nodes).

A template whose scheduling fields do not decode (impossible after validation, but the read model is
not re-validated) matches no node, with code ``InvalidTemplate``, rather than failing the reconcile.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.core.affinity import match_node_selector, match_terms
from engine.core.tolerations import (
    NO_EXECUTE,
    NO_SCHEDULE,
    describe_taint,
    first_untolerated,
    with_daemon_tolerations,
)
from events.k8s import NodeSelectorTerm, PodTemplate, Taint, Toleration, scheduling_spec
from projections.model import NodeState

Rule = Literal["template", "nodeName", "nodeSelector", "nodeAffinity", "taints"]

ELIGIBLE = "Eligible"
INVALID_TEMPLATE = "InvalidTemplate"
NODE_NAME_MISMATCH = "NodeNameMismatch"
NODE_SELECTOR_MISMATCH = "NodeSelectorMismatch"
NODE_AFFINITY_MISMATCH = "NodeAffinityMismatch"
TAINT_NO_SCHEDULE = "TaintNotToleratedNoSchedule"
TAINT_NO_EXECUTE = "TaintNotToleratedNoExecute"


class RuleCheck(msgspec.Struct, frozen=True):
    rule: Rule
    passed: bool
    message: str


class Eligibility(msgspec.Struct, frozen=True):
    should_run: bool
    should_continue_running: bool
    #: the first failed rule's code, or ``Eligible``
    code: str
    message: str
    checks: tuple[RuleCheck, ...] = ()


class Placement(msgspec.Struct, frozen=True):
    """A template's scheduling fields, decoded once per reconcile and checked against many nodes.

    ``tolerations`` already include the automatic ones: the simulated pod of upstream carries them.
    """

    valid: bool
    node_name: str = ""
    node_selector: dict[str, str] = {}
    terms: tuple[NodeSelectorTerm, ...] | None = None
    tolerations: tuple[Toleration, ...] = ()


def placement(template: PodTemplate) -> Placement:
    try:
        spec = scheduling_spec(template)
    except msgspec.ValidationError:
        return Placement(valid=False)
    required = spec.affinity.node_affinity if spec.affinity else None
    selector = required.required_during_scheduling_ignored_during_execution if required else None
    return Placement(
        valid=True,
        node_name=spec.node_name,
        node_selector=dict(spec.node_selector),
        terms=selector.node_selector_terms if selector is not None else None,
        tolerations=with_daemon_tolerations(spec.tolerations, spec.host_network),
    )


def _blocking(taint: Taint) -> bool:
    return taint.effect in (NO_SCHEDULE, NO_EXECUTE)


def _no_execute(taint: Taint) -> bool:
    return taint.effect == NO_EXECUTE


def evaluate(where: Placement, node: NodeState) -> Eligibility:
    if not where.valid:
        message = "the pod template's scheduling fields do not decode"
        return Eligibility(False, False, INVALID_TEMPLATE, message, (RuleCheck("template", False, message),))
    checks: list[RuleCheck] = []
    failure: tuple[str, str] | None = None

    name_ok = not where.node_name or where.node_name == node.name
    name_msg = (
        "no template nodeName"
        if not where.node_name
        else f"template nodeName is {where.node_name}" + ("" if name_ok else f", not {node.name}")
    )
    checks.append(RuleCheck("nodeName", name_ok, name_msg))
    if not name_ok:
        failure = (NODE_NAME_MISMATCH, name_msg)

    sel = match_node_selector(where.node_selector, node.labels)
    checks.append(RuleCheck("nodeSelector", sel.matched, sel.message))
    if not sel.matched and failure is None:
        failure = (NODE_SELECTOR_MISMATCH, sel.message)

    aff = match_terms(where.terms, node.name, node.labels)
    checks.append(RuleCheck("nodeAffinity", aff.matched, aff.message))
    if not aff.matched and failure is None:
        failure = (NODE_AFFINITY_MISMATCH, aff.message)

    blocking = first_untolerated(node.taints, where.tolerations, _blocking)
    evicting = first_untolerated(node.taints, where.tolerations, _no_execute)
    if blocking is None:
        checks.append(RuleCheck("taints", True, "every NoSchedule and NoExecute taint is tolerated"))
    else:
        shown = evicting if evicting is not None else blocking
        taint_msg = f"taint {describe_taint(shown)} not tolerated"
        checks.append(RuleCheck("taints", False, taint_msg))
        if failure is None:
            failure = (TAINT_NO_EXECUTE if evicting is not None else TAINT_NO_SCHEDULE, taint_msg)

    if failure is None:
        return Eligibility(True, True, ELIGIBLE, "node is eligible", tuple(checks))
    if not name_ok or not sel.matched or not aff.matched:
        return Eligibility(False, False, failure[0], failure[1], tuple(checks))
    return Eligibility(False, evicting is None, failure[0], failure[1], tuple(checks))


def node_should_run(node: NodeState, template: PodTemplate) -> Eligibility:
    """One-off form of ``evaluate(placement(template), node)``."""
    return evaluate(placement(template), node)
