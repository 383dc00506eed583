"""Per-node manage (docs/upstream-semantics.md A.5): failed and succeeded pods, duplicates, terminating pods,
in-flight commands, the burst cap, and node changes that start or stop a node's daemon pod."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.backoff import MAX_DELAY
from engine.core.expectations import EXPECTATIONS_TIMEOUT
from engine.core.manage import (
    DUPLICATE_POD,
    FAILED_DAEMON_POD,
    FAILED_POD_BACKOFF,
    POD_TERMINATING,
    SUCCEEDED_DAEMON_POD,
)
from engine.core.reconcile import BURST_REPLICAS, COMMAND_IN_FLIGHT
from events.types import NodeLabelsChanged, NodeTaintsChanged
from tests.core.world import (
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

STRATEGIES = [pytest.param(on_delete(), id="OnDelete"), pytest.param(rolling(1), id="RollingUpdate")]


def one_node(strategy: dict[str, Any] | None = None) -> World:
    w = World()
    w.node("node-0")
    w.apply(ds_doc(strategy=strategy or rolling(1)))
    return w


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_failed_pod_is_deleted_and_replaced_on_the_next_sync(strategy: dict[str, Any]) -> None:
    w = one_node(strategy)
    pod = w.pod("node-0", phase="Failed")
    first = w.reconcile()
    assert deleted_pods(first) == [pod.name] and counts(first) == (0, 1)
    assert reason_codes(first, "node-0") == [FAILED_DAEMON_POD]
    assert first.decision is not None
    (b,) = first.decision.backoffs
    assert (b.node, b.generation, b.delay_seconds) == ("node-0", 1, 1.0)
    w.execute(first)
    assert created_nodes(w.reconcile()) == ["node-0"]


def test_failed_pod_backoff_doubles_and_holds_deletes_until_it_ends() -> None:
    w = one_node()
    w.settle()
    delays: list[float] = []
    held_for: list[float] = []
    for _ in range(4):
        (pod,) = w.pods_on("node-0")
        w.fail(pod)
        result = w.reconcile()
        waited = 0.0
        while not deletes(result):
            assert result.requeue_after is not None and result.requeue_after > 0
            waited += result.requeue_after
            w.tick(result.requeue_after)
            result = w.reconcile()
        held_for.append(waited)
        assert result.decision is not None
        assert [r.code for r in result.decision.reasons] == [FAILED_DAEMON_POD]
        delays.append(result.decision.backoffs[0].delay_seconds)
        w.execute(result)
        assert created_nodes(w.step()) == ["node-0"]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert held_for == [0.0, 1.0, 2.0, 4.0]


def test_failed_pod_in_backoff_is_reported_as_waiting() -> None:
    w = one_node()
    w.settle()
    (pod,) = w.pods_on("node-0")
    w.fail(pod)
    w.step()
    w.step()
    (again,) = w.pods_on("node-0")
    w.fail(again)
    w.apply(ds_doc(history=3))  # a new generation changes status, so the decision is recorded
    result = w.reconcile()
    assert FAILED_POD_BACKOFF not in reason_codes(result, "node-0")  # a new generation resets the backoff
    assert deleted_pods(result) == [again.name]


def test_failed_pod_backoff_is_capped_at_fifteen_minutes_and_reset_by_a_new_generation() -> None:
    from engine.core import backoff
    from projections.model import Backoff

    entry = Backoff(generation=1, delay_seconds=MAX_DELAY, until=100.0 + MAX_DELAY)
    assert backoff.advance(entry, 1, 100.0 + MAX_DELAY).delay_seconds == MAX_DELAY
    assert backoff.advance(entry, 2, 100.0 + MAX_DELAY).delay_seconds == 1.0
    assert backoff.remaining(entry, 2, 101.0) is None
    assert backoff.remaining(entry, 1, 101.0) == pytest.approx(MAX_DELAY - 1)
    stale = Backoff(generation=1, delay_seconds=8.0, until=108.0)
    assert backoff.advance(stale, 1, 100.0 + 2 * MAX_DELAY + 1).delay_seconds == 1.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_succeeded_pod_is_deleted(strategy: dict[str, Any]) -> None:
    w = one_node(strategy)
    pod = w.pod("node-0", phase="Succeeded")
    result = w.reconcile()
    assert deleted_pods(result) == [pod.name]
    assert reason_codes(result, "node-0") == [SUCCEEDED_DAEMON_POD]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_duplicate_pods_keep_the_oldest(strategy: dict[str, Any]) -> None:
    w = one_node(strategy)
    oldest = w.pod("node-0", "b-oldest")
    w.tick(1)
    newer = w.pod("node-0", "a-newer")
    w.tick(1)
    newest = w.pod("node-0", "c-newest")
    result = w.reconcile()
    assert deleted_pods(result) == sorted([newer.name, newest.name])
    assert oldest.name not in deleted_pods(result)
    assert set(reason_codes(result, "node-0")) == {DUPLICATE_POD}


def test_duplicates_with_equal_creation_time_keep_the_smaller_name() -> None:
    w = one_node()
    w.pod("node-0", "b")
    w.pod("node-0", "a")
    assert deleted_pods(w.reconcile()) == ["b"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_terminating_pod_blocks_recreation_without_surge(strategy: dict[str, Any]) -> None:
    w = one_node(strategy)
    pod = w.pod("node-0")
    w.terminating(pod)
    result = w.reconcile()
    assert counts(result) == (0, 0)
    assert reason_codes(result, "node-0") == [POD_TERMINATING]
    w.execute(result)
    w.gone(pod)
    assert created_nodes(w.reconcile()) == ["node-0"]


def test_terminating_pod_does_not_block_creation_with_surge() -> None:
    w = one_node(surge(1))
    pod = w.pod("node-0")
    w.terminating(pod)
    assert created_nodes(w.reconcile()) == ["node-0"]


def test_surge_manage_keeps_oldest_new_and_oldest_old_and_drops_extras() -> None:
    w = one_node(surge(1))
    old = w.pod("node-0", "old-1", revision="oldhash")
    w.tick(1)
    old2 = w.pod("node-0", "old-2", revision="oldhash")
    w.tick(1)
    new = w.pod("node-0", "new-1", ready=False)
    w.tick(1)
    new2 = w.pod("node-0", "new-2", ready=False)
    result = w.reconcile()
    assert deleted_pods(result) == sorted([old2.name, new2.name])
    assert old.name not in deleted_pods(result) and new.name not in deleted_pods(result)


@pytest.mark.parametrize(
    ("old_ready", "new_ready", "deleted"),
    [
        pytest.param(False, False, ["old"], id="old-not-ready-goes"),
        pytest.param(True, False, [], id="old-ready-new-unavailable-both-stay"),
        pytest.param(True, True, ["old"], id="new-available-old-goes"),
    ],
)
def test_surge_manage_resolves_an_old_and_a_new_pod(
    old_ready: bool, new_ready: bool, deleted: list[str]
) -> None:
    w = World()
    w.node("node-0")
    w.node("node-1")
    w.apply(ds_doc(strategy=surge(1)))
    w.pod("node-1")
    w.pod("node-1", "extra", revision="x")
    w.pod("node-1", "extra2", revision="x")  # forces manage to act on node-1, so its output is inspectable
    w.pod("node-0", "old", revision="oldhash", ready=old_ready)
    w.tick(1)
    w.pod("node-0", "new", ready=new_ready)
    result = w.reconcile()
    assert [c.pod_name for c in deletes(result) if c.node == "node-0"] == deleted


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_second_command_while_one_is_in_flight(strategy: dict[str, Any]) -> None:
    w = one_node(strategy)
    first = w.reconcile()
    w.record(first)  # the executor has not reported yet
    again = w.reconcile()
    assert counts(again) == (0, 0)
    assert again.decision is None  # the status already counts the pod in flight
    assert again.requeue_after == pytest.approx(EXPECTATIONS_TIMEOUT)


def test_in_flight_command_blocks_status_observed_generation_and_reports_waiting() -> None:
    w = one_node()
    w.record(w.reconcile())
    w.apply(ds_doc(image="v2"))
    result = w.reconcile()
    assert counts(result) == (0, 0)
    assert result.status.observed_generation == 1  # not bumped while expectations are unsatisfied
    assert result.decision is not None and reason_codes(result, "node-0") == [COMMAND_IN_FLIGHT]


def test_in_flight_command_times_out_after_five_minutes() -> None:
    w = one_node()
    w.record(w.reconcile())
    w.tick(EXPECTATIONS_TIMEOUT - 1)
    assert counts(w.reconcile()) == (0, 0)
    w.tick(1)
    assert counts(w.reconcile()) == (1, 0)


@pytest.mark.parametrize(("nodes", "expected"), [(10, 10), (BURST_REPLICAS + 5, BURST_REPLICAS)])
def test_burst_cap_limits_creates_per_reconcile(nodes: int, expected: int) -> None:
    w = World()
    w.nodes(nodes)
    w.apply(ds_doc())
    result = w.reconcile()
    assert counts(result) == (expected, 0)
    w.execute(result)
    assert counts(w.reconcile()) == (nodes - expected, 0)


def test_node_label_change_starts_and_stops_the_daemon_pod() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc(pod_spec={"nodeSelector": {"gpu": "true"}}))
    assert counts(w.reconcile()) == (0, 0)
    w.emit(NodeLabelsChanged(name="node-0", labels={"gpu": "true"}))
    w.step()
    assert len(w.pods_on("node-0")) == 1
    w.emit(NodeLabelsChanged(name="node-0", labels={}))
    result = w.reconcile()
    assert counts(result) == (0, 1)


def test_no_schedule_taint_added_later_keeps_the_pod_and_no_execute_removes_it() -> None:
    w = one_node()
    w.settle()
    w.emit(NodeTaintsChanged(name="node-0", taints=(taint("dedicated", "NoSchedule"),)))
    kept = w.reconcile()
    assert counts(kept) == (0, 0) and kept.status.number_misscheduled == 1
    w.emit(NodeTaintsChanged(name="node-0", taints=(taint("dedicated", "NoExecute"),)))
    assert counts(w.reconcile()) == (0, 1)


def test_removed_node_takes_its_pod_out_of_the_counts() -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc())
    w.settle()
    w.remove_node("node-1")
    result = w.reconcile()
    assert counts(result) == (0, 0)
    assert result.status.desired_number_scheduled == 1 and result.status.current_number_scheduled == 1


def test_every_node_gets_a_reason() -> None:
    w = World()
    w.nodes(2)
    w.node("tainted", taints=[taint("dedicated", "NoSchedule", "user1")])
    w.apply(ds_doc())
    result = w.reconcile()
    assert result.decision is not None
    assert {r.node for r in result.decision.reasons} == {"node-0", "node-1", "tainted"}
    (skip,) = [r for r in result.decision.reasons if r.node == "tainted"]
    assert (skip.action, skip.code, skip.message) == (
        "skip",
        "TaintNotToleratedNoSchedule",
        "taint dedicated=user1:NoSchedule not tolerated",
    )
    created = [r for r in result.decision.reasons if r.action == "create"]
    assert all(r.command_id and r.pod for r in created)


def test_terminal_pod_being_deleted_is_not_mapped_so_the_node_gets_a_new_pod() -> None:
    w = one_node()
    pod = w.pod("node-0", phase="Failed")
    w.terminating(pod)
    assert created_nodes(w.reconcile()) == ["node-0"]


def test_non_terminal_pod_being_deleted_still_counts_as_current() -> None:
    w = one_node()
    pod = w.pod("node-0")
    w.terminating(pod)
    assert w.reconcile().status.current_number_scheduled == 1


@pytest.mark.parametrize(("name", "prefix"), [("foo", "foo-"), ("x" * 70, "x" * 58)])
def test_pod_names_use_the_generate_name_prefix_rules(name: str, prefix: str) -> None:
    from engine.core.pod_template import pod_name

    generated = pod_name(name, "uid", "node", 1)
    assert generated.startswith(prefix) and len(generated) == len(prefix) + 5
    assert generated == pod_name(name, "uid", "node", 1)


def test_recreated_daemonset_is_not_blocked_by_the_old_objects_commands_in_flight() -> None:
    w = one_node()
    w.record(w.reconcile())  # a create in flight for the first object
    w.delete()
    w.tick(1)
    w.apply(ds_doc())  # same name, new uid
    assert created_nodes(w.reconcile()) == ["node-0"]
