"""Revision history (docs/upstream-semantics.md A.10): retention by revisionHistoryLimit, live pods pin
revisions, rollback rolls forward, change-cause carried along."""

from __future__ import annotations

import pytest

from engine.core.pods import is_updated
from engine.core.revisions import retained_revisions, rollback_template
from events.errors import NotFound
from events.types import PodDeleted
from tests.core.world import World, ds_doc, on_delete


def history(w: World, images: list[str], cause: bool = False) -> None:
    for image in images:
        doc = ds_doc(strategy=on_delete(), image=image, history=2)
        if cause:
            doc["metadata"]["annotations"] = {"kubernetes.io/change-cause": f"set image {image}"}
        w.apply(doc)


def test_retention_keeps_current_plus_limit_newest_old_revisions() -> None:
    w = World()
    history(w, ["v1", "v2", "v3", "v4", "v5"])
    kept = retained_revisions(w.ds(), [])
    assert [r.number for r in kept] == [3, 4, 5]


def test_retention_never_drops_a_revision_a_live_pod_uses() -> None:
    w = World()
    w.node("node-0")
    history(w, ["v1"])
    ds = w.ds()
    v1 = ds.template_hash
    w.pod("node-0", revision=v1)
    history(w, ["v2", "v3", "v4", "v5"])
    kept = retained_revisions(w.ds(), w.state.pods.values())
    assert [r.number for r in kept] == [1, 4, 5]  # upstream: skip the pinned one, still trim the surplus
    assert kept[0].hash == v1


def test_revision_history_limit_zero_keeps_only_current() -> None:
    w = World()
    for image in ["v1", "v2"]:
        w.apply(ds_doc(image=image, history=0))
    assert [r.number for r in retained_revisions(w.ds(), [])] == [2]


def test_rollback_returns_an_old_template_and_reapplying_it_rolls_forward() -> None:
    w = World()
    history(w, ["v1", "v2"], cause=True)
    ds = w.ds()
    template = rollback_template(ds, 1)
    assert template.spec["containers"][0]["image"] == "v1"
    assert rollback_template(ds).spec["containers"][0]["image"] == "v1"  # 0: the previous revision
    history(w, ["v1"])
    ds = w.ds()
    current = ds.revisions[ds.template_hash]
    assert current.number == 3
    assert sorted(r.number for r in ds.revisions.values()) == [2, 3]
    assert ds.revisions[next(h for h in ds.revisions if h != ds.template_hash)].change_cause == "set image v2"


def test_rollback_to_missing_revision_is_not_found() -> None:
    w = World()
    history(w, ["v1"])
    with pytest.raises(NotFound):
        rollback_template(w.ds(), 7)
    with pytest.raises(NotFound):
        rollback_template(w.ds())


def test_template_generation_starts_at_one_and_moves_only_with_the_template() -> None:
    w = World()
    w.node("node-0")
    w.apply(ds_doc(image="v1"))
    assert (w.ds().generation, w.ds().template_generation) == (1, 1)
    w.apply(ds_doc(image="v1", min_ready=5))  # a spec change outside the template
    assert (w.ds().generation, w.ds().template_generation) == (2, 1)
    w.apply(ds_doc(image="v2", min_ready=5))
    assert (w.ds().generation, w.ds().template_generation) == (3, 2)
    w.apply(ds_doc(image="v1", min_ready=5))  # back to an old template: still a template change
    assert (w.ds().generation, w.ds().template_generation) == (4, 3)


def test_created_pods_carry_the_template_generation_they_were_made_from() -> None:
    w = World()
    w.nodes(2)
    w.apply(ds_doc(image="v1", strategy=on_delete()))
    w.settle()
    assert _generation_labels(w) == {"node-0": "1", "node-1": "1"}
    w.apply(ds_doc(image="v2", strategy=on_delete()))
    assert not any(is_updated(p, w.ds()) for p in w.state.pods.values())  # OnDelete: old pods stay old
    old = w.pods_on("node-0")[0]
    w.emit(PodDeleted(namespace=old.namespace, name=old.name, node=old.node))  # the user deletes one
    w.settle()
    assert _generation_labels(w) == {"node-0": "2", "node-1": "1"}
    assert [p.node for p in w.state.pods.values() if is_updated(p, w.ds())] == ["node-0"]


def _generation_labels(w: World) -> dict[str, str | None]:
    return {p.node: p.labels.get("pod-template-generation") for p in w.state.pods.values()}
