"""Placement preview (docs/rollout-control.md): grouped counts that match what applying then does,
every rule per node, ineligible nodes never failures, held nodes named, the state untouched."""

from __future__ import annotations

import copy
from typing import Any

from engine.core.manifests import parse_daemonset
from engine.core.preview import preview
from tests.core.world import KEY, World, ds_doc


def labels(i: int) -> dict[str, str]:
    out = {"pool": "a" if i < 60 else "b"}
    if 40 <= i < 80:
        out["gpu"] = "true"
    return out


def selected(selector: dict[str, str], image: str = "v1", **strategy: Any) -> dict[str, Any]:
    doc = ds_doc(pod_spec={"nodeSelector": selector}, image=image)
    if strategy:
        doc["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": strategy}
    return doc


def hundred() -> World:
    w = World()
    for i in range(100):
        w.node(f"node-{i:03d}", labels(i))
    w.apply(selected({"pool": "a"}))
    w.settle()
    return w


def placed(w: World) -> dict[str, str]:
    """node -> revision of its live pod."""
    return {n: p.revision_hash for n in w.state.nodes for p in w.pods_on(n) if p.deletion_timestamp is None}


def test_a_node_selector_change_over_100_nodes_previews_what_applying_does() -> None:
    w = hundred()
    doc = selected({"gpu": "true"}, maxUnavailable="100%")
    before_state = copy.deepcopy(w.state)
    (found,) = preview(w.state, [parse_daemonset(doc)], w.now)
    assert w.state == before_state, "a preview must not touch the state"
    assert found.result == "configured" and found.changes
    assert found.counts == {"place": 20, "stop": 40, "replace": 20, "unchanged": 0, "ineligible": 20}
    before = placed(w)
    w.apply(doc)
    w.settle()
    after = placed(w)
    new = w.ds().template_hash
    did = {
        "place": sum(1 for n in after if n not in before),
        "stop": sum(1 for n in before if n not in after),
        "replace": sum(1 for n in after if n in before and before[n] != new and after[n] == new),
        "unchanged": sum(1 for n in after if n in before and before[n] == after[n]),
        "ineligible": sum(1 for n in w.state.nodes if n not in before and n not in after),
    }
    assert did == found.counts


def test_every_rule_is_listed_and_ineligible_is_not_a_failure() -> None:
    w = hundred()
    (found,) = preview(w.state, [parse_daemonset(selected({"gpu": "true"}))], w.now)
    by_node = {n.node: n for n in found.nodes}
    far = by_node["node-090"]
    assert far.action == "ineligible"
    assert [r.split(":")[0] for r in far.reasons[:4]] == [
        "nodeName",
        "nodeSelector",
        "nodeAffinity",
        "taints",
    ]
    assert "FAIL" in far.reasons[1] and far.reasons[-1] == "not targeted"


def test_an_unchanged_manifest_changes_nothing() -> None:
    w = hundred()
    (found,) = preview(w.state, [parse_daemonset(selected({"pool": "a"}))], w.now)
    assert found.result == "unchanged" and not found.changes
    assert found.counts["unchanged"] == 60 and found.counts["ineligible"] == 40


def test_nodes_a_partition_holds_are_unchanged_and_say_why() -> None:
    w = hundred()
    doc = selected({"pool": "a"}, image="v2", maxUnavailable=1, partition=50)
    (found,) = preview(w.state, [parse_daemonset(doc)], w.now)
    assert (found.counts["replace"], found.counts["unchanged"]) == (10, 50)
    held = next(n for n in found.nodes if n.node == "node-000")
    assert "HeldByPartition" in held.reasons[-1]


def test_a_new_daemonset_is_previewed_as_created() -> None:
    w = World()
    w.nodes(3)
    (found,) = preview(w.state, [parse_daemonset(ds_doc())], w.now)
    assert (found.daemonset, found.result, found.counts["place"]) == (KEY, "created", 3)
