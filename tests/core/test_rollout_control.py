"""Rollout controls (docs/rollout-control.md): partition, pause and a node selector narrow the
rolling-update step only; new nodes get the current revision; a failed old pod on a held node is
replaced at its own revision; nothing is ever downgraded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.guard import (
    COMPLETE_CONDITION,
    GUARD_CONDITION,
    GUARD_TRIPPED,
    REVERTED,
    TRIPPED,
)
from engine.core.manifests import parse_daemonset
from engine.core.progress import PROGRESSING, rollout_progress
from engine.core.rollout_control import (
    HELD_BY_GUARD,
    HELD_BY_PARTITION,
    HELD_BY_PAUSE,
    HELD_BY_SELECTOR,
    REPLACE_HELD_FAILED,
    partition_count,
)
from engine.core.validation import ManifestInvalid
from events.k8s import DaemonSetSpec, PodTemplate, RollingUpdate, UpdateStrategy
from tests.core.world import KEY, World, creates, ds_doc, reason_codes


def strategy(mu: int | str = 1, ms: int | str = 0, **controls: Any) -> dict[str, Any]:
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": mu, "maxSurge": ms, **controls}}


def fleet(count: int, labels: dict[str, dict[str, str]] | None = None, **controls: Any) -> World:
    w = World()
    for i in range(count):
        w.node(f"node-{i}", (labels or {}).get(f"node-{i}"))
    w.apply(ds_doc(strategy=strategy(**controls)))
    w.settle()
    return w


def update(w: World, image: str = "v2", **controls: Any) -> None:
    w.apply(ds_doc(strategy=strategy(**controls), image=image))


def revisions(w: World) -> dict[str, str]:
    """node -> "new" / "old" for the node's live pod."""
    ds = w.ds()
    out = {}
    for node in sorted(w.state.nodes):
        pods = [p for p in w.pods_on(node) if p.deletion_timestamp is None]
        out[node] = ",".join("new" if p.revision_hash == ds.template_hash else "old" for p in pods)
    return out


def new_nodes(w: World) -> list[str]:
    return [n for n, r in revisions(w).items() if r == "new"]


@pytest.mark.parametrize(
    ("partition", "desired", "kept"),
    [
        pytest.param(None, 5, 0, id="absent"),
        pytest.param(2, 5, 2, id="int"),
        pytest.param(9, 5, 9, id="more-than-nodes"),
        pytest.param("50%", 5, 2, id="50pct-of-5-rounds-down"),
        pytest.param("99%", 5, 4, id="99pct-of-5-rounds-down"),
        pytest.param("100%", 5, 5, id="100pct"),
        pytest.param("10%", 9, 0, id="10pct-of-9-is-0"),
        pytest.param("0%", 5, 0, id="0pct"),
    ],
)
def test_partition_counts_round_percentages_down(
    partition: int | str | None, desired: int, kept: int
) -> None:
    ru = RollingUpdate(max_unavailable=1, max_surge=0, partition=partition)
    spec = DaemonSetSpec(template=PodTemplate(), update_strategy=UpdateStrategy(rolling_update=ru))
    assert partition_count(spec, desired) == kept


@pytest.mark.parametrize(
    ("partition", "mu", "ms", "updated"),
    [
        pytest.param(2, 1, 0, ["node-2", "node-3", "node-4"], id="2-of-5-without-surge"),
        pytest.param(2, 0, 1, ["node-2", "node-3", "node-4"], id="2-of-5-with-surge"),
        pytest.param("40%", 5, 0, ["node-2", "node-3", "node-4"], id="40pct-kept-all-at-once"),
        pytest.param("50%", 1, 0, ["node-2", "node-3", "node-4"], id="50pct-of-5-keeps-2"),
        pytest.param(5, 1, 0, [], id="all-kept"),
        pytest.param(0, 2, 0, ["node-0", "node-1", "node-2", "node-3", "node-4"], id="zero-is-upstream"),
    ],
)
def test_partition_keeps_the_smallest_names_on_the_old_revision(
    partition: int | str, mu: int, ms: int, updated: list[str]
) -> None:
    w = fleet(5, mu=mu, ms=ms, partition=partition)
    update(w, mu=mu, ms=ms, partition=partition)
    w.settle()
    assert new_nodes(w) == updated
    held = [n for n in w.state.nodes if n not in updated]
    last = w.reconcile()
    for node in held:
        assert HELD_BY_PARTITION in [r.code for r in last.reasons if r.node == node]
        assert any("partition" in r.message for r in last.reasons if r.node == node)


def test_partition_updates_from_the_end_one_budget_at_a_time() -> None:
    w = fleet(5, partition=2)
    update(w, partition=2)
    first = w.step()
    assert [d.node for d in first.decision.commands] == ["node-4"]  # type: ignore[union-attr]


def test_lowering_the_partition_widens_and_raising_it_never_downgrades() -> None:
    w = fleet(5, partition=4)
    update(w, partition=4)
    w.settle()
    assert new_nodes(w) == ["node-4"]
    update(w, partition=2)
    w.settle()
    assert new_nodes(w) == ["node-2", "node-3", "node-4"]
    update(w, partition=5)
    w.settle()
    assert new_nodes(w) == ["node-2", "node-3", "node-4"]  # kept: nothing is rolled back
    update(w, partition=0)
    w.settle()
    assert len(new_nodes(w)) == 5


def test_a_node_joining_mid_rollout_gets_the_current_revision_and_takes_a_slot() -> None:
    w = fleet(5, partition=2)
    update(w, partition=2)
    w.step()  # node-4 is being replaced
    w.node("node-5")
    w.settle()
    # 6 nodes, partition 2: four on the new revision, the joiner among them, node-0..1 still old
    assert revisions(w) == {
        "node-0": "old",
        "node-1": "old",
        "node-2": "new",
        "node-3": "new",
        "node-4": "new",
        "node-5": "new",
    }
    assert len(new_nodes(w)) == 6 - 2


def test_a_failed_old_pod_on_a_partitioned_node_is_replaced_at_its_own_revision() -> None:
    w = fleet(3, partition=2)
    old_hash = w.ds().template_hash
    update(w, partition=2)
    w.settle()
    assert revisions(w) == {"node-0": "old", "node-1": "old", "node-2": "new"}
    (pod,) = w.pods_on("node-0")
    w.fail(pod)
    result = w.reconcile()
    assert REPLACE_HELD_FAILED in reason_codes(result, "node-0")
    (create,) = creates(result)
    assert create.node == "node-0" and create.revision_hash == old_hash
    w.execute(result)
    w.settle()
    assert revisions(w) == {"node-0": "old", "node-1": "old", "node-2": "new"}


def test_a_failed_old_pod_on_a_node_free_to_update_gets_the_new_revision() -> None:
    w = fleet(3, partition=1)
    update(w, partition=1, mu=1)
    (pod,) = w.pods_on("node-2")
    w.fail(pod)
    w.settle()
    assert revisions(w) == {"node-0": "old", "node-1": "new", "node-2": "new"}


@pytest.mark.parametrize(("mu", "ms"), [(1, 0), (0, 1)])
def test_pause_stops_the_rolling_step_only(mu: int, ms: int) -> None:
    w = fleet(3, mu=mu, ms=ms)
    update(w, mu=mu, ms=ms, paused=True)
    w.settle()
    assert revisions(w) == {"node-0": "old", "node-1": "old", "node-2": "old"}
    last = w.reconcile()
    assert all(HELD_BY_PAUSE in [r.code for r in last.reasons if r.node == n] for n in w.state.nodes)
    w.node("node-3")  # new nodes still get the current revision
    w.settle()
    assert revisions(w)["node-3"] == "new"
    (pod,) = w.pods_on("node-1")
    w.fail(pod)  # failed pods are still replaced, at their revision
    w.settle()
    assert revisions(w)["node-1"] == "old"
    update(w, mu=mu, ms=ms, paused=False)  # resume
    w.settle()
    assert len(new_nodes(w)) == 4


def test_selector_makes_only_matching_nodes_candidates_and_partition_counts_them_all() -> None:
    canary = {"canary": "true"}
    labels = {"node-1": canary, "node-3": canary}
    sel = {"matchLabels": canary}
    w = fleet(5, labels)
    update(w, selector=sel)
    w.settle()
    assert new_nodes(w) == ["node-1", "node-3"]
    last = w.reconcile()
    assert HELD_BY_SELECTOR in [r.code for r in last.reasons if r.node == "node-0"]
    assert any("selector" in r.message for r in last.reasons if r.node == "node-0")
    # partition counts every node: 5 - 4 = 1 slot, already taken by the updated canaries
    w2 = fleet(5, labels)
    update(w2, selector=sel, partition=4)
    w2.settle()
    assert new_nodes(w2) == ["node-3"]
    # widening: drop the selector
    update(w, partition=0)
    w.settle()
    assert len(new_nodes(w)) == 5


def test_scoped_reconcile_defers_a_failed_held_pod_to_the_full_one() -> None:
    from engine.core.reconcile import reconcile_nodes

    w = fleet(3, partition=2)
    update(w, partition=2)
    w.settle()
    (pod,) = w.pods_on("node-0")
    w.fail(pod)
    assert reconcile_nodes(w.state, KEY, ["node-0"], w.now) is None


def doc_with(api_version: str, rolling: dict[str, Any]) -> dict[str, Any]:
    doc = ds_doc(strategy={"type": "RollingUpdate", "rollingUpdate": rolling})
    doc["apiVersion"] = api_version
    return doc


@pytest.mark.parametrize("api_version", ["apps/v1", "apps.kruise.io/v1alpha1", "apps.kruise.io/v1beta1"])
def test_controls_are_accepted_in_apps_v1_and_openkruise_manifests(api_version: str) -> None:
    rolling = {
        "rollingUpdateType": "Standard",
        "maxUnavailable": 1,
        "partition": "20%",
        "paused": True,
        "selector": {"matchLabels": {"canary": "true"}},
    }
    manifest = parse_daemonset(doc_with(api_version, rolling))
    ru = manifest.spec.update_strategy.rolling_update
    assert ru is not None
    assert (ru.partition, ru.paused) == ("20%", True)
    assert ru.selector is not None and ru.selector.match_labels == {"canary": "true"}


@pytest.mark.parametrize(
    ("rolling", "path"),
    [
        pytest.param({"partition": -1}, "partition", id="negative-partition"),
        pytest.param({"partition": "120%"}, "partition", id="over-100pct"),
        pytest.param({"partition": "x"}, "partition", id="not-int-or-percent"),
        pytest.param({"paused": "yes please"}, "paused", id="paused-not-bool"),
        pytest.param(
            {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}, "selector", id="sel"
        ),
        pytest.param({"rollingUpdateType": "InPlaceIfPossible"}, "rollingUpdateType", id="in-place"),
    ],
)
def test_bad_controls_are_refused_naming_the_field(rolling: dict[str, Any], path: str) -> None:
    with pytest.raises(ManifestInvalid) as raised:
        parse_daemonset(doc_with("apps.kruise.io/v1alpha1", {"maxUnavailable": 1, **rolling}))
    assert any(f"spec.updateStrategy.rollingUpdate.{path}" in e.path for e in raised.value.errors)


def test_a_plain_spec_encodes_as_before() -> None:
    manifest = parse_daemonset(ds_doc(strategy=strategy()))
    ru = manifest.spec.update_strategy.rolling_update
    assert ru == RollingUpdate(max_unavailable=1, max_surge=0)


def test_host_port_with_max_surge_is_refused_naming_both_fields() -> None:
    ports = {
        "containers": [{"name": "foo", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    }
    doc = ds_doc(strategy=strategy(mu=0, ms=1))
    doc["spec"]["template"]["spec"] = ports
    with pytest.raises(ManifestInvalid) as raised:
        parse_daemonset(doc)
    (error,) = raised.value.errors
    assert error.path == "spec.updateStrategy.rollingUpdate.maxSurge"
    assert "spec.template.spec.containers[0].ports[0].hostPort" in str(error)
    assert "two pods cannot bind one host port" in str(error)
    # without surge the same template is fine
    doc["spec"]["updateStrategy"] = strategy(mu=1, ms=0)
    parse_daemonset(doc)


# --- the availability guard ------------------------------------------------------------------------


def guarded_doc(image: str, mu: int = 2, threshold: int | str = 2, revert: bool = False) -> dict[str, Any]:
    doc = ds_doc(strategy=strategy(mu=mu), image=image)
    doc["spec"]["progressDeadlineSeconds"] = 60
    doc["spec"]["rolloutGuard"] = {"failureThreshold": threshold, "autoRevert": revert}
    return doc


def guarded_fleet(revert: bool = False, threshold: int | str = 2) -> World:
    w = World()
    w.nodes(5)
    w.apply(guarded_doc("v1", revert=revert, threshold=threshold))
    w.settle()
    return w


def conditions(w: World) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.revision) for c in w.ds().status.conditions}


def test_a_guarded_daemonset_remembers_its_last_complete_revision() -> None:
    w = guarded_fleet()
    assert conditions(w) == {
        PROGRESSING: ("True", "RolloutComplete", ""),
        COMPLETE_CONDITION: ("True", "", w.ds().template_hash),
    }


def test_an_unguarded_daemonset_has_no_conditions() -> None:
    w = fleet(2)
    assert w.ds().status.conditions == ()


def test_the_guard_stops_the_rollout_after_two_never_ready_nodes() -> None:
    w = guarded_fleet()
    w.apply(guarded_doc("v2"))
    v2 = w.ds().template_hash
    w.step()  # node-4 and node-3 (from the end) are replaced...
    w.step(ready=False)  # ...by pods that never become Ready
    assert revisions(w) == {
        "node-0": "old",
        "node-1": "old",
        "node-2": "old",
        "node-3": "new",
        "node-4": "new",
    }
    w.tick(30)
    assert w.reconcile().decision is None or not deletes_of(w.reconcile())
    w.tick(31)  # past progressDeadlineSeconds: 2 bad nodes reach the threshold
    tripped = w.step()
    assert conditions(w)[GUARD_CONDITION] == ("True", TRIPPED, v2)
    assert any(r.code == GUARD_TRIPPED and "node-3" in r.message for r in tripped.reasons)
    assert not deletes_of(tripped)
    w.tick(600)
    later = w.reconcile()
    assert not deletes_of(later)
    for node in ("node-0", "node-1", "node-2"):
        codes = [r.code for r in later.reasons if r.node == node]
        assert HELD_BY_GUARD in codes, (node, codes)
    # a new template is a new rollout: the guard judges it afresh
    w.apply(guarded_doc("v3"))
    assert w.reconcile().decision is not None
    w.settle()
    assert GUARD_CONDITION not in conditions(w)


def test_a_failed_new_pod_counts_against_the_threshold() -> None:
    w = guarded_fleet(threshold=1)
    w.apply(guarded_doc("v2", threshold=1))
    w.step()
    w.step()
    (pod,) = [p for p in w.pods_on("node-4") if p.revision_hash == w.ds().template_hash]
    w.fail(pod)
    w.step()
    assert conditions(w)[GUARD_CONDITION][0] == "True"
    assert "node-4" in w.ds().status.conditions[-1].message


def test_auto_revert_rolls_back_to_the_last_complete_revision_and_stays_there() -> None:
    w = guarded_fleet(revert=True)
    v1 = w.ds().template_hash
    w.apply(guarded_doc("v2", revert=True))
    v2 = w.ds().template_hash
    w.step()
    w.step(ready=False)
    w.tick(61)
    w.settle()
    ds = w.ds()
    assert ds.template_hash == v2  # the spec as applied is untouched...
    assert {p.revision_hash for n in w.state.nodes for p in w.pods_on(n)} == {v1}  # ...the pods are v1
    assert all(p.ready for n in w.state.nodes for p in w.pods_on(n))
    assert conditions(w)[GUARD_CONDITION] == ("True", REVERTED, v2)
    assert conditions(w)[COMPLETE_CONDITION] == ("True", "", v1)
    w.tick(600)
    assert not w.reconcile().decision  # stays reverted: nothing to do


def deletes_of(result: Any) -> list[Any]:
    from tests.core.world import deletes

    return deletes(result)


def test_explain_node_names_the_control_that_holds_it() -> None:
    from engine.core.explain import explain_node

    w = fleet(3, partition=2)
    update(w, partition=2)
    w.settle()
    found = explain_node(w.state, KEY, "node-0", w.now)
    assert [r.code for r in found.reasons] == [HELD_BY_PARTITION]
    assert "partition" in found.reasons[0].message


def progressing(w: World) -> tuple[str, str, str]:
    (cond,) = [c for c in w.ds().status.conditions if c.type == PROGRESSING]
    return cond.status, cond.reason, cond.message


def test_status_names_the_nodes_holding_the_budget_and_the_control_that_stops_the_rollout() -> None:
    w = fleet(5, partition=2)
    update(w, partition=2)
    w.step()  # node-4's old pod deleted
    w.step(ready=False)  # its replacement never becomes Ready
    status, reason, message = progressing(w)
    assert (status, reason) == ("True", "RollingUpdate")
    assert "node-4 holds maxUnavailable: new pod" in message and "not Ready" in message
    progress = rollout_progress(w.state, KEY, w.now + 30)
    assert progress.phase == "progressing"
    assert [b.node for b in progress.blockers] == ["node-4"]
    assert "30s after it was created" in progress.blockers[0].why
    (pod,) = w.pods_on("node-4")
    w.ready(pod)
    w.settle()
    assert progressing(w) == (
        "False",
        HELD_BY_PARTITION,
        f"2 node(s) kept on their revision by {HELD_BY_PARTITION}: node-0, node-1",
    )
    assert rollout_progress(w.state, KEY, w.now).phase == "stopped"


def test_the_progress_condition_does_not_change_with_time_alone() -> None:
    w = fleet(3, partition=1)
    update(w, partition=1)
    w.step()
    w.step(ready=False)
    before = w.ds().status
    w.tick(120)
    assert w.reconcile().decision is None
    assert w.ds().status == before


def test_a_paused_rollout_is_stopped_by_the_pause() -> None:
    w = fleet(3)
    update(w, paused=True)
    w.settle()
    assert progressing(w)[:2] == ("False", HELD_BY_PAUSE)
    progress = rollout_progress(w.state, KEY, w.now)
    assert progress.phase == "stopped" and progress.controls == ("paused (rollingUpdate.paused)",)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=st.integers(min_value=1, max_value=8),
    partition=st.one_of(st.integers(min_value=0, max_value=10), st.sampled_from(["0%", "25%", "50%", "99%"])),
    mu=st.integers(min_value=1, max_value=3),
    surge=st.booleans(),
    joiners=st.integers(min_value=0, max_value=2),
)
def test_a_settled_partition_keeps_exactly_its_count_old_the_smallest_names(
    nodes: int, partition: int | str, mu: int, surge: bool, joiners: int
) -> None:
    controls = {"mu": 0, "ms": mu} if surge else {"mu": mu}
    w = fleet(nodes, **controls, partition=partition)
    update(w, **controls, partition=partition)
    w.step()
    for i in range(joiners):  # nodes joining mid-rollout
        w.node(f"node-{nodes + i}")
    w.settle()
    total = nodes + joiners
    kept = min(total, partition_count(w.ds().spec, total))
    got = revisions(w)
    old = sorted(n for n, r in got.items() if r == "old")
    assert set(got.values()) <= {"old", "new"}, got  # one live pod per node at the end
    # joiners always get the new revision, so fewer may stay old than the partition asks
    assert len(old) <= kept
    assert old == sorted(n for n in got if n.startswith("node-") and int(n[5:]) < nodes)[: len(old)]
    assert all(got[f"node-{nodes + i}"] == "new" for i in range(joiners))
    if joiners == 0:
        assert len(old) == kept
