"""Revision history (A.10): retention by revisionHistoryLimit, live pods pin revisions, rollback rolls
forward, change-cause carried along."""

from __future__ import annotations

import pytest

from engine.core.revisions import retained_revisions, rollback_template
from events.errors import NotFound
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
