"""Intersecting NATS subject filters (``events.subjects.intersect``): what lets ``audit`` ask the server
for "node X *and* type Y" as one filter. Checked against a table, and against the store's own matcher
over a grid of subjects (a filter that matched more, or less, than both would show up there)."""

from __future__ import annotations

import itertools

import pytest

from engine.store.memory_store import subject_matches
from events.subjects import intersect, intersect_groups, node_filters, type_filter


@pytest.mark.parametrize(
    ("a", "b", "both"),
    [
        ("dse.node.n1.>", "dse.node.*.cordoned", "dse.node.n1.cordoned"),
        ("dse.pod.n1.>", "dse.pod.*.*.*.ready", "dse.pod.n1.*.*.ready"),
        ("dse.node.n1.>", "dse.pod.*.*.*.ready", None),
        ("dse.>", "dse.decision.*.*", "dse.decision.*.*"),
        ("dse.decision.*.*", "dse.>", "dse.decision.*.*"),
        ("dse.node.a", "dse.node.a", "dse.node.a"),
        ("dse.node.a", "dse.node.b", None),
        ("dse.node", "dse.node.>", None),  # '>' needs at least one more token
        ("dse.node.*", "dse.node.a.b", None),
        ("dse.*.a", "dse.node.*", "dse.node.a"),
    ],
)
def test_intersect(a: str, b: str, both: str | None) -> None:
    assert intersect(a, b) == both


TOKENS = ["dse", "node", "pod", "n1", "n2", "ready", "cordoned"]
SUBJECTS = [".".join(p) for n in range(1, 6) for p in itertools.product(TOKENS, repeat=n) if p[0] == "dse"]
FILTERS = [
    "dse.>", "dse.node.>", "dse.pod.>", "dse.node.n1.>", "dse.pod.n1.>", "dse.*.n1.>", "dse.node.*.cordoned",
    "dse.pod.*.*.*.ready", "dse.*.*", "dse.node.n1.cordoned", "dse.*.n2.*", "dse.pod.>",
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations_with_replacement(FILTERS, 2)))
def test_intersect_matches_exactly_what_both_match(a: str, b: str) -> None:
    both = intersect(a, b)
    for subject in SUBJECTS:
        expected = subject_matches(a, subject) and subject_matches(b, subject)
        assert (both is not None and subject_matches(both, subject)) == expected, (a, b, both, subject)


def test_intersect_groups_is_the_union_over_one_filter_per_group() -> None:
    groups = [node_filters("n1"), [type_filter("pod.ready"), type_filter("node.cordoned")]]
    assert intersect_groups(groups) == ["dse.node.n1.cordoned", "dse.pod.n1.*.*.ready"]
    assert intersect_groups([["dse.node.>"], ["dse.pod.>"]]) == []
