"""The eligibility memo (engine/core/nodemap.py) is bounded by the live fleet, not by history, and
never changes a decision: node churn, label flips and rollouts run with one memo kept across
reconciles, as the controller keeps it, and every reconcile is compared with one run without a memo."""

from __future__ import annotations

from engine.core.nodemap import EligibilityMemo
from engine.core.reconcile import reconcile
from events.types import NodeLabelsChanged
from tests.core.world import KEY, World, ds_doc

GPU = {"nodeSelector": {"gpu": "true"}, "containers": [{"name": "c", "image": "x"}]}


def _same_with_and_without(world: World, memo: EligibilityMemo) -> None:
    with_memo = reconcile(world.state, KEY, world.now, memo)
    alone = reconcile(world.state, KEY, world.now)
    assert with_memo == alone


def test_churn_and_rollouts_keep_the_memo_to_the_live_fleet() -> None:
    world = World()
    names = world.nodes(50, {"gpu": "true"})
    world.apply(ds_doc(pod_spec=GPU))
    memo = EligibilityMemo()
    fresh = 50
    for round_ in range(40):
        # a label flip on every node: each is a new version of the node
        for i, name in enumerate(names):
            gpu = "true" if (i + round_) % 3 else "false"
            world.emit(NodeLabelsChanged(name=name, labels={"gpu": gpu, "round": str(round_)}))
        # churn: five nodes leave, five new ones join under new names
        for name in names[:5]:
            world.remove_node(name)
        names = names[5:] + world.nodes(5, {"gpu": "true"}, start=fresh)
        fresh += 5
        if round_ % 10 == 9:  # a rollout: a new template hash
            world.apply(ds_doc(pod_spec=GPU, image=f"x:{round_}"))
            memo.retain(ds.template_hash for ds in world.state.daemonsets.values())
        _same_with_and_without(world, memo)
        assert len(memo) <= len(world.state.nodes) + 64, (round_, len(memo))
    # 2,000 node versions and 200 node names seen; what is kept is one current template's 50 nodes
    assert len(memo) == len(world.state.nodes) == 50


def test_a_changed_node_is_evaluated_again() -> None:
    world = World()
    world.nodes(3, {"gpu": "true"})
    world.apply(ds_doc(pod_spec=GPU))
    memo = EligibilityMemo()
    _same_with_and_without(world, memo)
    world.emit(NodeLabelsChanged(name="node-1", labels={"gpu": "false"}))
    _same_with_and_without(world, memo)
    views = reconcile(world.state, KEY, world.now, memo)
    assert views is not None
    assert {r.node for r in views.decision.reasons if r.node == "node-1"}  # node-1 is named


def test_retain_drops_old_templates() -> None:
    world = World()
    world.nodes(4)
    world.apply(ds_doc())
    memo = EligibilityMemo()
    reconcile(world.state, KEY, world.now, memo)
    world.apply(ds_doc(image="foo/bar:2"))
    reconcile(world.state, KEY, world.now, memo)
    assert len(memo) == 8  # both templates' tables
    memo.retain(ds.template_hash for ds in world.state.daemonsets.values())
    assert len(memo) == 4
