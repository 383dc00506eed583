"""Rolling update and OnDelete (docs/upstream-semantics.md A.9): budgets, delete-first without surge,
create-first with surge, minReadySeconds against ``now``, and the fixed node order."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.budgets import budgets
from engine.core.rolling import REPLACE_OLD, REPLACE_UNAVAILABLE, SURGE_CREATE, WAIT_BUDGET
from events.k8s import DaemonSetSpec, PodTemplate, RollingUpdate, UpdateStrategy
from tests.core.world import (
    KEY,
    World,
    counts,
    created_nodes,
    deleted_pods,
    deletes,
    ds_doc,
    on_delete,
    reason_codes,
    rolling,
    surge,
    taint,
)


def spec(
    max_unavailable: int | str | None, max_surge: int | str | None, kind: str = "RollingUpdate"
) -> DaemonSetSpec:
    ru = RollingUpdate(max_unavailable=max_unavailable, max_surge=max_surge)
    return DaemonSetSpec(template=PodTemplate(), update_strategy=UpdateStrategy(type=kind, rolling_update=ru))


@pytest.mark.parametrize(
    ("mu", "ms", "desired", "expected"),
    [
        pytest.param(1, 0, 5, (0, 1), id="default-one"),
        pytest.param("50%", 0, 3, (0, 2), id="50pct-of-3-rounds-up-to-2"),
        pytest.param("50%", 0, 2, (0, 1), id="50pct-of-2"),
        pytest.param("100%", 0, 2, (0, 2), id="100pct-of-2"),
        pytest.param("10%", 0, 1, (0, 1), id="10pct-of-1-rounds-up"),
        pytest.param(0, "25%", 10, (3, 0), id="surge-pct-rounds-up"),
        pytest.param(0, 0, 4, (0, 1), id="both-zero-means-one-unavailable"),
        pytest.param(0, 0, 0, (0, 0), id="both-zero-no-desired"),
        pytest.param(1, None, 3, (0, 1), id="nil-surge-is-zero"),
        pytest.param(3, 2, 3, (0, 1), id="ondelete-scales-nothing-safety-net-one"),
    ],
)
def test_budgets_scale_against_desired_and_round_up(
    mu: int | str | None, ms: int | str | None, desired: int, expected: tuple[int, int]
) -> None:
    kind = "OnDelete" if (mu, ms) == (3, 2) else "RollingUpdate"
    assert budgets(spec(mu, ms, kind), desired) == expected


def fleet(count: int, strategy: dict[str, Any], **doc: Any) -> World:
    w = World()
    w.nodes(count)
    w.apply(ds_doc(strategy=strategy, **doc))
    w.settle()
    return w


def unavailable_nodes(w: World, key: str = KEY) -> int:
    return sum(
        1
        for node in w.state.nodes
        if not any(p.ready and p.deletion_timestamp is None for p in w.pods_on(node, key))
    )


@pytest.mark.parametrize(("mu", "per_step"), [(1, 1), (2, 2), ("40%", 2)])
def test_rolling_update_deletes_then_recreates_within_max_unavailable(mu: int | str, per_step: int) -> None:
    w = fleet(5, rolling(mu))
    w.apply(ds_doc(strategy=rolling(mu), image="v2"))
    first = w.reconcile()
    assert counts(first) == (0, per_step)
    assert set(reason_codes(first, "node-0")) == {REPLACE_OLD}
    assert [c.node for c in deletes(first)] == [f"node-{i}" for i in range(per_step)]  # sorted node order
    rounds = 0
    result = first
    while result.decision is not None and result.decision.commands:
        w.execute(result)
        assert unavailable_nodes(w) <= per_step
        result = w.reconcile()
        rounds += 1
    ds = w.ds()
    assert all(p.revision_hash == ds.template_hash for p in w.state.pods.values())
    assert len(w.state.pods) == 5
    assert result.status.updated_number_scheduled == 5


def test_manage_and_rolling_update_alternate() -> None:
    w = fleet(2, rolling(1))
    w.apply(ds_doc(strategy=rolling(1), image="v2"))
    kinds = []
    for _ in range(4):
        result = w.step()
        kinds.append(counts(result))
    assert kinds == [(0, 1), (1, 0), (0, 1), (1, 0)]


def test_unavailable_old_pods_are_always_replaced() -> None:
    w = World()
    w.nodes(3)
    w.apply(ds_doc(strategy=rolling(1)))
    for n in ("node-0", "node-1", "node-2"):
        w.pod(n, revision="old", ready=False)
    result = w.reconcile()
    assert counts(result) == (0, 3)
    assert set(reason_codes(result, "node-1")) == {REPLACE_UNAVAILABLE}


def test_update_saves_old_healthy_pods_when_new_pods_are_unavailable() -> None:
    w = World()
    w.nodes(20)
    w.apply(ds_doc(strategy=rolling(10)))
    for i in range(10):
        w.pod(f"node-{i}", ready=False)
    for i in range(10, 20):
        w.pod(f"node-{i}", revision="old")
    result = w.reconcile()
    assert counts(result) == (0, 0)
    assert WAIT_BUDGET in reason_codes(result, "node-10")


def test_on_delete_never_replaces_but_recreates_deleted_pods_from_the_current_template() -> None:
    w = fleet(3, on_delete())
    w.apply(ds_doc(strategy=on_delete(), image="v2"))
    result = w.reconcile()
    assert counts(result) == (0, 0)
    assert result.status.updated_number_scheduled == 0
    w.execute(result)
    (pod,) = w.pods_on("node-1")
    w.gone(pod)
    recreated = w.reconcile()
    assert created_nodes(recreated) == ["node-1"]
    assert recreated.status.updated_number_scheduled == 1
    assert recreated.decision is not None
    assert recreated.decision.commands[0].revision_hash == w.ds().template_hash  # type: ignore[union-attr]


def test_surge_creates_new_pods_first_then_deletes_old_when_available() -> None:
    w = fleet(3, surge(1))
    w.apply(ds_doc(strategy=surge(1), image="v2"))
    first = w.reconcile()
    assert created_nodes(first) == ["node-0"]
    assert reason_codes(first, "node-0") == [SURGE_CREATE]
    w.execute(first)
    second = w.reconcile()
    (d,) = deletes(second)
    assert d.node == "node-0" and counts(second) == (0, 1)
    w.execute(second)
    w.settle()
    ds = w.ds()
    assert sorted(p.node for p in w.state.pods.values()) == ["node-0", "node-1", "node-2"]
    assert all(p.revision_hash == ds.template_hash for p in w.state.pods.values())


def test_surge_never_has_more_than_max_surge_extra_pods() -> None:
    w = fleet(6, surge(2))
    w.apply(ds_doc(strategy=surge(2), image="v2"))
    for _ in range(40):
        result = w.reconcile()
        w.execute(result, ready=False)
        doubled = sum(1 for n in w.state.nodes if len(w.pods_on(n)) > 1)
        assert doubled <= 2
        for pod in list(w.state.pods.values()):
            if not pod.ready:
                w.ready(pod)
        if result.decision is None or not result.decision.commands:
            break
    assert len(w.state.pods) == 6


def test_surge_replaces_unavailable_old_pod_immediately_beyond_budget() -> None:
    w = World()
    w.nodes(3)
    w.apply(ds_doc(strategy=surge(1)))
    for n in ("node-0", "node-1", "node-2"):
        w.pod(n, revision="old", ready=False)
    assert created_nodes(w.reconcile()) == ["node-0", "node-1", "node-2"]


@pytest.mark.parametrize(("new_ready", "deleted"), [(True, True), (False, False)])
def test_surge_old_pod_on_no_longer_schedulable_node_goes_only_when_others_are_available(
    new_ready: bool, deleted: bool
) -> None:
    w = World()
    w.node("node-0", taints=[taint("dedicated", "NoSchedule")])
    w.node("node-1")
    w.apply(ds_doc(strategy=surge(1)))
    old = w.pod("node-0", revision="old")  # kept by manage (NoSchedule only blocks new pods)
    w.pod("node-1", ready=new_ready)
    result = w.reconcile()
    assert (deleted_pods(result) == [old.name]) is deleted
    assert counts(result)[0] == 0


def test_min_ready_seconds_gates_availability_strictly_and_requeues() -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc(strategy=rolling(1), min_ready=10))
    w.settle()
    result = w.reconcile()
    assert result.status.number_ready == 2 and result.status.number_available == 0
    assert result.requeue_after == pytest.approx(11.0)
    w.tick(10)
    assert w.reconcile().status.number_available == 0  # ready_since + 10 < now is strict
    w.tick(0.5)
    assert w.reconcile().status.number_available == 2


def test_min_ready_seconds_slows_the_rolling_update() -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc(strategy=rolling(1), min_ready=10))
    w.settle()
    w.tick(11)
    w.apply(ds_doc(strategy=rolling(1), min_ready=10, image="v2"))
    assert counts(w.step()) == (0, 1)
    assert counts(w.step()) == (1, 0)
    held = w.reconcile()
    assert counts(held) == (0, 0)  # the new pod is Ready but not yet available: the budget is used
    w.tick(11)
    assert counts(w.reconcile()) == (0, 1)
