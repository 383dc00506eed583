"""What a decision records: everything needed to recompute and explain it, and small enough for one
message at fleet scale (creates by revision, routine reasons summarised)."""

from __future__ import annotations

import msgspec

from engine.core.dispatch import commands_to_send
from engine.core.pod_template import daemon_pod_template
from engine.core.reconcile import SUMMARY_THRESHOLD, compact_reasons, reconcile
from events.types import CreatePod, NodeReason
from tests.core.world import KEY, World, ds_doc


def _fleet(nodes: int) -> World:
    w = World()
    w.nodes(nodes)
    w.apply(ds_doc())
    return w


def test_a_fleet_wide_decision_stays_well_under_the_message_limit() -> None:
    w = _fleet(5_000)
    result = reconcile(w.state, KEY, w.now)
    assert result.decision is not None
    size = len(msgspec.json.encode(result.decision))
    assert size < 200_000, size  # 787 KB before creates were recorded by reference and reasons summarised
    assert len(result.reasons) == 5_000  # the full list is still there for explain


def test_recorded_creates_name_their_revision_and_come_back_whole() -> None:
    w = _fleet(3)
    result = reconcile(w.state, KEY, w.now)
    assert result.decision is not None
    recorded = [c for c in result.decision.commands if isinstance(c, CreatePod)]
    assert recorded and all(c.template is None for c in recorded)
    sent = commands_to_send(w.state, result.decision)
    ds = w.state.daemonsets[KEY]
    assert [c.id for c in sent] == [c.id for c in result.decision.commands]
    for command in sent:
        assert isinstance(command, CreatePod)
        assert command.template == daemon_pod_template(ds, command.node)


def test_small_groups_keep_every_node_and_large_ones_are_summarised() -> None:
    few = tuple(
        NodeReason(node=f"n{i}", action="skip", code="X", message="m") for i in range(SUMMARY_THRESHOLD)
    )
    assert compact_reasons(few) == few
    many = (*few, NodeReason(node="extra", action="skip", code="X", message="m"))
    acting = (NodeReason(node="n0", action="create", code="MissingPod", message="c"),)
    (kept, summary) = compact_reasons(acting + many)
    assert kept == acting[0]
    assert summary.node == "" and summary.code == "X"
    assert summary.message.startswith(f"{SUMMARY_THRESHOLD + 1} nodes (n0, n1")
