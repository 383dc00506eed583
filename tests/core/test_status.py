"""Status (docs/upstream-semantics.md A.11), "nothing changed" detection, determinism of ids, and kubectl's
rollout criterion."""

from __future__ import annotations

import pytest

from engine.core.status import rollout_complete
from events.types import DaemonSetStatus, NodeCordoned
from tests.core.world import World, counts, creates, ds_doc, on_delete, rolling, sent_creates, surge, taint


def test_status_counts_first_pod_per_node_and_misscheduled_nodes() -> None:
    w = World()
    w.nodes(4)
    w.node("tainted", taints=[taint("dedicated", "NoSchedule")])
    w.apply(ds_doc(strategy=on_delete()))
    w.pod("node-0")  # ready, updated
    w.pod("node-1", ready=False)  # not ready
    w.pod("node-2", revision="old")  # ready, old
    w.pod("tainted")  # misscheduled
    result = w.reconcile()  # creates on node-3
    s = result.status
    assert (s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled) == (4, 4, 1)
    assert (s.number_ready, s.number_available, s.updated_number_scheduled) == (2, 2, 3)
    assert s.number_unavailable == 2
    assert s.observed_generation == 1


def test_surge_node_counts_as_updated_only_once_the_old_pod_is_gone() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc(strategy=surge(1)))
    w.pod("node-0", "old", revision="old")
    w.tick(1)
    w.pod("node-0", "new", ready=False)
    assert w.reconcile().status.updated_number_scheduled == 0


def test_failed_pod_counts_as_current_but_not_ready() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc())
    w.pod("node-0", phase="Failed")
    s = w.reconcile().status
    assert (s.current_number_scheduled, s.number_ready) == (1, 0)


def test_no_decision_when_nothing_would_change() -> None:
    w = World()
    w.nodes(3)
    w.apply(ds_doc())
    w.settle()
    final = w.reconcile()
    w.record(final)
    assert w.reconcile().decision is None


def test_status_only_decision_when_a_pod_becomes_ready() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc())
    w.step(ready=False)
    (pod,) = w.pods_on("node-0")
    w.record(w.reconcile())
    assert w.reconcile().decision is None
    w.ready(pod)
    result = w.reconcile()
    assert result.decision is not None and counts(result) == (0, 0)
    assert result.decision.status.number_ready == 1


def test_new_generation_bumps_observed_generation() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc(strategy=on_delete()))
    w.settle()
    w.apply(ds_doc(strategy=on_delete(), history=5))
    result = w.reconcile()
    assert result.decision is not None and result.status.observed_generation == 2


def test_reconcile_is_deterministic_and_ids_derive_from_state() -> None:
    w = World()
    w.nodes(3)
    w.apply(ds_doc())
    a, b = w.reconcile(), w.reconcile()
    assert a == b
    ids = [c.id for c in creates(a)]
    assert len(set(ids)) == 3
    names = [c.pod_name for c in creates(a)]
    assert all(n.startswith("foo-") and len(n) == len("foo-") + 5 for n in names)
    w.emit(NodeCordoned(name="node-0"))
    assert {c.id for c in creates(w.reconcile())}.isdisjoint(ids)  # a later state gives new ids


def test_created_pod_template_carries_revision_label_and_tolerations() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc(pod_spec={"hostNetwork": True}))
    (command,) = sent_creates(w, w.reconcile())
    ds = w.ds()
    assert command.template.metadata.labels["controller-revision-hash"] == ds.template_hash
    assert command.revision_hash == ds.template_hash
    assert command.owner_uid == ds.uid and command.owner_name == "foo"
    keys = {t["key"] for t in command.template.spec["tolerations"]}
    assert "node.kubernetes.io/network-unavailable" in keys and len(keys) == 7
    assert ds.spec.template.spec.get("tolerations") is None  # the DaemonSet's own template is untouched


def status(desired: int, updated: int, available: int, observed: int) -> DaemonSetStatus:
    return DaemonSetStatus(
        desired_number_scheduled=desired,
        updated_number_scheduled=updated,
        number_available=available,
        observed_generation=observed,
    )


@pytest.mark.parametrize(
    ("strategy", "st", "expected"),
    [
        pytest.param(rolling(1), status(3, 3, 3, 1), True, id="complete"),
        pytest.param(rolling(1), status(3, 2, 3, 1), False, id="not-all-updated"),
        pytest.param(rolling(1), status(3, 3, 2, 1), False, id="not-all-available"),
        pytest.param(rolling(1), status(3, 3, 3, 0), False, id="generation-not-observed"),
        pytest.param(on_delete(), status(3, 3, 3, 1), False, id="ondelete-never-reports-complete"),
        pytest.param(rolling(1), status(0, 0, 0, 1), True, id="no-desired-nodes"),
    ],
)
def test_rollout_complete_follows_kubectl(
    strategy: dict[str, object], st: DaemonSetStatus, expected: bool
) -> None:
    w = World()
    w.apply(ds_doc(strategy=strategy))
    assert rollout_complete(w.ds(), st) is expected
