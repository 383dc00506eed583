"""Ownership and deletion (docs/upstream-semantics.md A.7, A.12): adoption, release, other controllers,
cascades, orphaning."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.reconcile import CASCADE_DELETE, SELECTING_ALL
from events.k8s import LabelSelector
from tests.core.world import (
    KEY,
    World,
    counts,
    deleted_pods,
    ds_doc,
    on_delete,
    reason_codes,
    rolling,
)


def test_orphan_matching_pod_in_namespace_is_adopted_and_not_duplicated() -> None:
    w = World()
    w.node("node-0")
    orphan = w.pod("node-0", "orphan", ds_key=None, revision="")
    w.apply(ds_doc(strategy=on_delete()))
    result = w.reconcile()
    assert result.decision is not None
    assert result.decision.adopted == (orphan.key,)
    assert "Adopted" in reason_codes(result, "node-0")
    assert counts(result) == (0, 0)  # the adopted pod fills the node (old revision: OnDelete keeps it)


def test_adopted_old_pod_is_rolled_in_the_same_reconcile_under_rolling_update() -> None:
    w = World()
    w.node("node-0")
    orphan = w.pod("node-0", "orphan", ds_key=None, revision="")
    w.apply(ds_doc(strategy=rolling(1)))
    result = w.reconcile()
    assert result.decision is not None and result.decision.adopted == (orphan.key,)
    assert deleted_pods(result) == ["orphan"]


@pytest.mark.parametrize(
    ("pod_kw", "adopted"),
    [
        pytest.param({"labels": {"app": "other"}}, False, id="selector-mismatch"),
        pytest.param({"namespace": "other"}, False, id="other-namespace"),
        pytest.param({"owner_uid": "someone-else"}, False, id="owned-by-another-controller"),
    ],
)
def test_pods_that_are_not_adoptable_are_ignored(pod_kw: dict[str, Any], adopted: bool) -> None:
    w = World()
    w.node("node-0")
    w.pod("node-0", "p", ds_key=None, **pod_kw)
    w.apply(ds_doc())
    result = w.reconcile()
    assert result.decision is not None and result.decision.adopted == ()
    assert counts(result) == (1, 0)  # the node still needs this DaemonSet's own pod


def test_terminating_orphan_is_not_adopted() -> None:
    w = World()
    w.node("node-0")
    pod = w.pod("node-0", "p", ds_key=None)
    w.terminating(pod)
    w.apply(ds_doc())
    result = w.reconcile()
    assert result.decision is not None and result.decision.adopted == ()


def test_relabelled_pod_is_released_and_replaced() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc())
    w.pod("node-0", "mine", labels={"name": "simple-daemon", "type": "debug"})
    result = w.reconcile()
    assert result.decision is not None
    assert result.decision.released == ("default/mine",)
    assert counts(result) == (1, 0)
    w.execute(result)
    assert w.state.pods["default/mine"].owner_uid == ""


@pytest.mark.parametrize("strategy", [on_delete(), rolling(1)])
def test_orphan_delete_then_recreate_with_same_template_adopts_without_churn(
    strategy: dict[str, Any],
) -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc(strategy=strategy))
    w.settle()
    w.delete(policy="Orphan")
    assert all(p.owner_uid == "" for p in w.state.pods.values())
    assert w.reconcile().decision is None  # orphan: nothing to do
    w.apply(ds_doc(strategy=strategy))
    result = w.reconcile()
    assert result.decision is not None and len(result.decision.adopted) == 2
    w.execute(result)
    assert w.settle() == 0


@pytest.mark.parametrize(("strategy", "replaced"), [(on_delete(), False), (rolling(1), True)])
def test_adopted_pods_with_a_different_template_follow_the_strategy(
    strategy: dict[str, Any], replaced: bool
) -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc(strategy=strategy))
    w.settle()
    old = {p.name for p in w.state.pods.values()}
    w.delete(policy="Orphan")
    w.apply(ds_doc(strategy=strategy, image="v2"))
    w.settle()
    now = {p.name for p in w.state.pods.values()}
    assert (now.isdisjoint(old)) is replaced
    assert (now == old) is not replaced


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_cascade_delete_removes_every_pod_and_creates_nothing(policy: Any) -> None:
    w = World()
    w.nodes(3)
    w.apply(ds_doc())
    w.settle()
    w.delete(policy=policy)
    result = w.reconcile()
    assert counts(result) == (0, 3)
    assert set(reason_codes(result, "node-0")) == {CASCADE_DELETE}
    w.record(result)
    again = w.reconcile()
    assert again.decision is None  # nothing new while the deletes are in flight
    for command in result.decision.commands:  # type: ignore[union-attr]
        w.carry_out(command)
    assert w.state.pods == {}
    assert KEY not in w.state.daemonsets and not w.state.deleted
    assert w.reconcile().decision is None


def test_background_cascade_of_old_object_runs_beside_a_recreated_daemonset() -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc())
    w.settle()
    w.delete(policy="Background")
    w.apply(ds_doc(labels={"name": "simple-daemon", "type": "v2"}))
    first = w.reconcile()
    assert counts(first) == (2, 0)  # the new DaemonSet goes first
    assert first.requeue_after == 0.0  # and the garbage collection right after
    w.execute(first)
    collected = []
    for _ in range(5):
        result = w.step()
        collected.extend(deleted_pods(result))
    assert len(collected) == 2
    assert len(w.state.pods) == 2 and not w.state.deleted


def test_empty_selector_is_never_synced_and_warns_once() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc())
    ds = w.ds()
    ds.spec = ds.spec.__class__(
        template=ds.spec.template, selector=LabelSelector(), update_strategy=ds.spec.update_strategy
    )
    result = w.reconcile()
    assert result.decision is not None and result.decision.commands == ()
    assert [r.code for r in result.decision.reasons] == [SELECTING_ALL]
    w.record(result)
    assert w.reconcile().decision is None
