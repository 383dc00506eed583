"""Who wrote each decision-tree record, judged by the fold (``projections.authority``): one rule per test."""

from __future__ import annotations

from datetime import timedelta

from events.envelope import Envelope, wrap
from events.types import CreatePod, DecisionRecorded, LeaderElected, NodeRegistered
from projections import snapshot
from projections.authority import Disowning, decision_id, misplaced
from projections.model import ClusterState
from projections.replay import replay
from tests.projections.histories import T0
from tests.projections.test_fold import applied, create_cmd


def marker(holder: str, epoch: int, *, source: str | None = None, cause: str = "", id: str = "") -> Envelope:
    return wrap(
        LeaderElected(holder=holder, epoch=epoch),
        id=id or f"m-{holder}-{epoch}-{cause}",
        occurred_at=T0,
        source=source if source is not None else holder,
        causation_id=cause,
    )


def decision(*cmds: CreatePod, state_seq: int = 1) -> DecisionRecorded:
    return DecisionRecorded(
        namespace="default", name="ds", uid="u1", generation=1, now=T0, state_seq=state_seq,
        template_hash="h", commands=cmds,
    )  # fmt: skip


def fenced(d: DecisionRecorded, on: int, source: str, when: int = 0) -> Envelope:
    """A decision as the leader's writer appends it: its id names the sequence it was fenced on."""
    return wrap(d, id=decision_id(d, on), occurred_at=T0 + timedelta(seconds=when), source=source)


def fold(*envs: Envelope) -> ClusterState:
    return replay([(i + 1, e) for i, e in enumerate(envs)])


def ds_applied() -> Envelope:
    return wrap(applied(), id="ds", occurred_at=T0, source="test")


def test_a_decision_fenced_by_the_leader_is_taken() -> None:
    # 1 ds applied, 2 marker, 3 decision fenced on 2
    s = fold(ds_applied(), marker("engine-a", 7), fenced(decision(create_cmd("c1")), 2, "engine-a"))
    assert s.authority.holder == "engine-a" and s.authority.epoch == 7 and s.authority.head == 3
    assert set(s.in_flight) == {"c1"} and s.authority.refused == 0


def test_a_decision_by_someone_else_is_refused_and_changes_nothing_but_the_sequence() -> None:
    forged = fenced(decision(create_cmd("c1")), 2, "mallory", when=999)
    s = fold(ds_applied(), marker("engine-a", 7), forged)
    assert s.seq == 3 and s.in_flight == {} and s.authority.refused == 1 and s.authority.head == 2
    assert s.last_time == T0.timestamp(), "a refused record's clock is not the log's"
    assert s.daemonsets["default/ds"].last_decision_seq == 0


def test_a_decision_with_the_leaders_name_but_not_its_fence_is_refused() -> None:
    # fenced on 1 (not the tree's last record, 2): what a copy of an older decision looks like
    s = fold(ds_applied(), marker("engine-a", 7), fenced(decision(create_cmd("c1")), 1, "engine-a"))
    assert s.in_flight == {} and s.authority.refused == 1


def test_the_chain_goes_on_from_each_decision_taken() -> None:
    s = fold(
        ds_applied(),
        marker("engine-a", 7),
        fenced(decision(create_cmd("c1")), 2, "engine-a"),
        fenced(decision(create_cmd("c2"), state_seq=3), 3, "engine-a"),
    )
    assert set(s.in_flight) == {"c1", "c2"} and s.authority.head == 4


def test_a_new_marker_hands_the_tree_to_its_holder() -> None:
    s = fold(
        ds_applied(),
        marker("engine-a", 7),
        marker("engine-b", 9),
        fenced(decision(create_cmd("a")), 2, "engine-a"),  # the deposed leader's, refused
        fenced(decision(create_cmd("b")), 3, "engine-b"),  # fenced on its own marker, not the refused one
    )
    assert s.authority.holder == "engine-b" and set(s.in_flight) == {"b"} and s.authority.refused == 1


def test_a_marker_written_by_another_than_its_holder_is_refused() -> None:
    s = fold(ds_applied(), marker("engine-a", 7), marker("mallory", 99, source="someone"))
    assert s.authority.holder == "engine-a" and s.authority.refused == 1


def test_decisions_before_any_marker_are_taken_as_logs_were_written_before_elections() -> None:
    s = fold(ds_applied(), wrap(decision(create_cmd("c1")), id="d", occurred_at=T0, source="engine"))
    assert set(s.in_flight) == {"c1"}


def test_the_authority_survives_a_snapshot() -> None:
    s = fold(ds_applied(), marker("engine-a", 7), fenced(decision(create_cmd("c1")), 2, "engine-a"))
    restored = snapshot.load(snapshot.dump(s))
    assert restored.authority == s.authority and restored.last_id == s.last_id


def test_engine_only_types_belong_on_their_own_subjects() -> None:
    d = fenced(decision(), 2, "engine-a")
    assert misplaced("dse.decision.default.ds", d) is None
    assert "not on dse.decision.default.ds" in (misplaced("dse.decision.default.other", d) or "")
    assert misplaced("dse.node.n1.registered", d) is not None
    assert misplaced("dse.decision._leader", marker("engine-a", 1)) is None
    node = wrap(NodeRegistered(name="n1"), id="n", occurred_at=T0, source="x")
    assert "decision tree" in (misplaced("dse.decision.default.ds", node) or "")
    assert misplaced("dse.node.n1.registered", node) is None


def test_a_re_affirmation_disowns_what_came_after_the_leaders_last_genuine_record() -> None:
    own = fenced(decision(), 1, "engine-a")
    records = [
        (1, marker("engine-a", 7, id="m1")),
        (2, own),
        (3, None),  # garbage
        (4, fenced(decision(), 3, "engine-a")),  # a copy of the leader's fence
        (5, marker("mallory", 1)),
        (6, marker("engine-a", 8, cause=own.id)),
    ]
    disowning = Disowning()
    found = [disowning.feed(seq, env) for seq, env in records]
    assert found[-1] == [3, 4, 5] and all(not f for f in found[:-1])
    assert disowning.unresolved == []


def test_a_re_affirmation_naming_nothing_known_disowns_nothing_and_is_noted() -> None:
    disowning = Disowning()
    assert disowning.feed(1, marker("engine-a", 7)) == []
    assert disowning.feed(2, marker("engine-a", 8, cause="nowhere")) == []
    assert disowning.unresolved == [2]
