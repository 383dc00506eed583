"""Label selectors, node affinity and tolerations, rule by rule
(docs/upstream-semantics.md A.2, A.3, B.20)."""

from __future__ import annotations

import pytest

from engine.core import affinity, selectors, tolerations
from events.k8s import (
    LabelSelector,
    LabelSelectorRequirement,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    Taint,
    Toleration,
)


def req(key: str, op: str, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=op, values=values)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param(None, {"a": "1"}, False, id="nil-selector-matches-nothing"),
        pytest.param(LabelSelector(), {"a": "1"}, True, id="empty-selector-matches-everything"),
        pytest.param(
            LabelSelector(match_labels={"a": "1"}), {"a": "1", "b": "2"}, True, id="match-labels-subset"
        ),
        pytest.param(
            LabelSelector(match_labels={"a": "1"}), {"a": "2"}, False, id="match-labels-value-differs"
        ),
        pytest.param(LabelSelector(match_expressions=(req("a", "In", "1", "2"),)), {"a": "2"}, True, id="in"),
        pytest.param(LabelSelector(match_expressions=(req("a", "In", "1"),)), {}, False, id="in-needs-key"),
        pytest.param(
            LabelSelector(match_expressions=(req("a", "NotIn", "1"),)), {}, True, id="notin-absent-key"
        ),
        pytest.param(
            LabelSelector(match_expressions=(req("a", "NotIn", "1"),)), {"a": "1"}, False, id="notin-listed"
        ),
        pytest.param(LabelSelector(match_expressions=(req("a", "Exists"),)), {"a": ""}, True, id="exists"),
        pytest.param(
            LabelSelector(match_expressions=(req("a", "DoesNotExist"),)), {"a": "x"}, False, id="doesnotexist"
        ),
        pytest.param(
            LabelSelector(match_labels={"a": "1"}, match_expressions=(req("b", "Exists"),)),
            {"a": "1"},
            False,
            id="labels-and-expressions-anded",
        ),
        pytest.param(
            LabelSelector(match_expressions=(req("a", "Gt", "1"),)), {"a": "2"}, False, id="unknown-op"
        ),
        pytest.param(
            LabelSelector(match_expressions=(req("a", "In"),)), {"a": "2"}, False, id="in-without-values"
        ),
        pytest.param(
            LabelSelector(match_expressions=(req("a", "Exists", "x"),)),
            {"a": "x"},
            False,
            id="exists-with-values",
        ),
    ],
)
def test_label_selector_semantics(
    selector: LabelSelector | None, labels: dict[str, str], expected: bool
) -> None:
    assert selectors.matches(selector, labels) is expected


def nreq(key: str, op: str, *values: str) -> NodeSelectorRequirement:
    return NodeSelectorRequirement(key=key, operator=op, values=values)


def term(
    *exprs: NodeSelectorRequirement, fields: tuple[NodeSelectorRequirement, ...] = ()
) -> NodeSelectorTerm:
    return NodeSelectorTerm(match_expressions=exprs, match_fields=fields)


@pytest.mark.parametrize(
    ("terms", "node", "labels", "expected"),
    [
        pytest.param(None, "n", {}, True, id="no-affinity-matches-all"),
        pytest.param((), "n", {}, False, id="required-with-no-terms-matches-nothing"),
        pytest.param((term(),), "n", {}, False, id="empty-term-matches-nothing"),
        pytest.param((term(nreq("gpu", "NotIn", "gpu")),), "n", {}, True, id="b20-notin-matches-absent-key"),
        pytest.param((term(nreq("n", "Gt", "3")),), "n", {"n": "abc"}, False, id="b20-gt-non-integer-label"),
        pytest.param((term(nreq("n", "Gt", "3")),), "n", {}, False, id="b20-gt-missing-key"),
        pytest.param((term(nreq("n", "Gt", "3")),), "n", {"n": "4"}, True, id="b20-gt-4-over-3"),
        pytest.param((term(nreq("n", "Gt", "3")),), "n", {"n": "3"}, False, id="gt-is-strict"),
        pytest.param((term(nreq("n", "Lt", "3")),), "n", {"n": "-1"}, True, id="lt-negative"),
        pytest.param((term(nreq("n", "Lt", "x")),), "n", {"n": "1"}, False, id="lt-non-integer-value"),
        pytest.param((term(nreq("n", "Gt", "1", "2")),), "n", {"n": "5"}, False, id="gt-two-values"),
        pytest.param(
            (term(nreq("a", "Exists")),), "n", {"a": "whatever"}, True, id="b20-exists-tests-key-only"
        ),
        pytest.param(
            (term(nreq("a", "DoesNotExist")),), "n", {"a": ""}, False, id="b20-doesnotexist-tests-key-only"
        ),
        pytest.param(
            (term(nreq("a", "In", "1")), term(nreq("b", "In", "2"))),
            "n",
            {"b": "2"},
            True,
            id="b20-terms-ored",
        ),
        pytest.param(
            (term(nreq("a", "In", "1"), nreq("b", "In", "2")),),
            "n",
            {"b": "2"},
            False,
            id="expressions-anded",
        ),
        pytest.param(
            (term(fields=(nreq("metadata.name", "In", "node-1"),)),),
            "node-1",
            {},
            True,
            id="b20-match-fields-in",
        ),
        pytest.param(
            (term(fields=(nreq("metadata.name", "In", "node-1"),)),),
            "node-2",
            {},
            False,
            id="b20-match-fields-other",
        ),
        pytest.param(
            (term(fields=(nreq("metadata.name", "In", "node-1", "node-2"),)),),
            "node-1",
            {},
            False,
            id="b20-match-fields-two-values-is-parse-error",
        ),
        pytest.param(
            (term(fields=(nreq("metadata.name", "NotIn", "node-1"),)),),
            "node-2",
            {},
            True,
            id="match-fields-notin",
        ),
        pytest.param(
            (term(fields=(nreq("metadata.name", "Exists", "x"),)),),
            "x",
            {},
            False,
            id="match-fields-bad-operator",
        ),
        pytest.param(
            (term(nreq("a", "Bogus", "1")), term(nreq("b", "Exists"))),
            "n",
            {"a": "1", "b": "1"},
            True,
            id="invalid-term-dropped-others-still-match",
        ),
        pytest.param(
            (term(nreq("a", "In", "1"), fields=(nreq("metadata.name", "In", "n"),)),),
            "n",
            {"a": "1"},
            True,
            id="expressions-and-fields-anded",
        ),
    ],
)
def test_required_node_affinity_semantics(
    terms: tuple[NodeSelectorTerm, ...] | None, node: str, labels: dict[str, str], expected: bool
) -> None:
    assert affinity.match_terms(terms, node, labels).matched is expected


def test_b20_node_selector_and_affinity_term_are_both_required() -> None:
    labels_a = {"a": "1"}
    assert affinity.match_node_selector({"a": "1"}, labels_a).matched
    assert not affinity.match_terms((term(nreq("b", "Exists")),), "n", labels_a).matched


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        pytest.param(
            Toleration(key="k", value="v", effect="NoSchedule"),
            Taint(key="k", value="v", effect="NoSchedule"),
            True,
            id="equal-default-operator",
        ),
        pytest.param(
            Toleration(key="k", operator="Equal", value="v"),
            Taint(key="k", value="w", effect="NoSchedule"),
            False,
            id="equal-value-differs",
        ),
        pytest.param(
            Toleration(key="k", operator="Exists"),
            Taint(key="k", value="any", effect="NoExecute"),
            True,
            id="exists-any-value-empty-effect",
        ),
        pytest.param(
            Toleration(operator="Exists"),
            Taint(key="anything", effect="NoExecute"),
            True,
            id="empty-key-exists-tolerates-all",
        ),
        pytest.param(
            Toleration(key="k", operator="Exists", effect="NoSchedule"),
            Taint(key="k", effect="NoExecute"),
            False,
            id="effect-differs",
        ),
        pytest.param(
            Toleration(key="j", operator="Exists"),
            Taint(key="k", effect="NoSchedule"),
            False,
            id="key-differs",
        ),
        pytest.param(
            Toleration(key="k", operator="Gt", value="1"),
            Taint(key="k", value="2", effect="NoSchedule"),
            False,
            id="alpha-gt-off",
        ),
        pytest.param(
            Toleration(key="k", operator="Exists", effect="NoExecute", toleration_seconds=5),
            Taint(key="k", effect="NoExecute"),
            True,
            id="toleration-seconds-ignored",
        ),
    ],
)
def test_toleration_matches_taint(toleration: Toleration, taint: Taint, expected: bool) -> None:
    assert tolerations.tolerates(toleration, taint) is expected


@pytest.mark.parametrize(("host_network", "count"), [(False, 6), (True, 7)])
def test_automatic_tolerations_include_network_unavailable_only_with_host_network(
    host_network: bool, count: int
) -> None:
    auto = tolerations.automatic_tolerations(host_network)
    assert len(auto) == count
    keys = {t.key for t in auto}
    assert ("node.kubernetes.io/network-unavailable" in keys) is host_network
    assert {t.key for t in auto if t.effect == "NoExecute"} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }
    assert all(t.operator == "Exists" and t.toleration_seconds is None for t in auto)


@pytest.mark.parametrize(
    ("user", "kept"),
    [
        pytest.param(
            Toleration(
                key="node.kubernetes.io/not-ready",
                operator="Exists",
                effect="NoExecute",
                toleration_seconds=300,
            ),
            False,
            id="same-identity-replaced",
        ),
        pytest.param(
            Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoSchedule"),
            True,
            id="other-effect-kept",
        ),
        pytest.param(
            Toleration(
                key="node.kubernetes.io/not-ready",
                operator="Equal",
                value="x",
                effect="NoExecute",
                toleration_seconds=300,
            ),
            True,
            id="other-operator-kept",
        ),
    ],
)
def test_add_or_update_replaces_only_identical_key_operator_value_effect(
    user: Toleration, kept: bool
) -> None:
    result = tolerations.with_daemon_tolerations([user], host_network=False)
    assert (user in result) is kept
    assert len(result) == 6 + kept


def test_first_untolerated_skips_prefer_no_schedule_and_keeps_order() -> None:
    taints = [
        Taint(key="a", effect="PreferNoSchedule"),
        Taint(key="b", effect="NoSchedule"),
        Taint(key="c", effect="NoExecute"),
    ]
    found = tolerations.first_untolerated(taints, [], lambda t: t.effect in ("NoSchedule", "NoExecute"))
    assert found == taints[1]
