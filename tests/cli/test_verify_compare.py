"""``replay verify`` across the change of pod uids to UUIDs (engine/core/uids.py): a decision recorded
with the old 32-hex uid matches today's recomputation, which mints the same digits as a UUID; any other
difference in the uid is still a mismatch."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.cli.verify import compare
from engine.core.uids import stable_uuid
from events.ids import stable_id
from events.types import CreatePod, DecisionRecorded

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _decision(pod_uid: str) -> DecisionRecorded:
    create = CreatePod(id="c1", node="node1", namespace="default", pod_name="agent-x", pod_uid=pod_uid,
                       owner_uid="ds-uid", owner_name="agent", revision_hash="h1")  # fmt: skip
    return DecisionRecorded(namespace="default", name="agent", uid="ds-uid", generation=1, now=NOW,
                            state_seq=7, template_hash="h1", commands=(create,))  # fmt: skip


def test_an_old_hex_uid_matches_the_uuid_minted_from_the_same_inputs() -> None:
    parts = ("ds-uid", "node1", 7, "pod")
    old, new = stable_id(*parts), stable_uuid(*parts)
    assert old != new and len(old) == 32 and len(new) == 36
    assert compare(12, _decision(old), _decision(new)) is None


def test_a_different_uid_is_still_a_mismatch() -> None:
    old = stable_id("ds-uid", "node1", 7, "pod")
    other = stable_uuid("ds-uid", "node2", 7, "pod")
    mismatch = compare(12, _decision(old), _decision(other))
    assert mismatch is not None and mismatch.field == "commands[0].pod_uid"
    assert mismatch.recomputed == other
