"""Laws of the fold: replay is a left fold, snapshots are transparent, indexes agree with the data."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import Envelope
from projections import snapshot
from projections.model import ClusterState
from projections.replay import replay
from tests.projections.histories import envelop, events

Stored = list[tuple[int, Envelope]]


def _split_history() -> st.SearchStrategy[tuple[Stored, Stored]]:
    return st.tuples(st.lists(events, max_size=30), st.lists(events, max_size=30)).map(
        lambda ab: (envelop(ab[0] + ab[1])[: len(ab[0])], envelop(ab[0] + ab[1])[len(ab[0]) :])
    )


@settings(max_examples=200, deadline=None)
@given(_split_history())
def test_replay_of_a_then_b_equals_applying_b_to_the_replay_of_a(ab: tuple[Stored, Stored]) -> None:
    a, b = ab
    assert replay(b, replay(a)) == replay(a + b)


@settings(max_examples=200, deadline=None)
@given(_split_history())
def test_a_snapshot_plus_the_tail_equals_a_full_replay(ab: tuple[Stored, Stored]) -> None:
    a, b = ab
    restored = snapshot.load(snapshot.dump(replay(a)))
    assert replay(a + b, restored) == replay(a + b)  # the overlap (a) is skipped by sequence


def _check_indexes(state: ClusterState) -> None:
    by_node: dict[str, set[str]] = {}
    by_owner: dict[str, set[str]] = {}
    orphans: dict[str, set[str]] = {}
    for key, pod in state.pods.items():
        by_node.setdefault(pod.node, set()).add(key)
        if pod.owner_uid:
            by_owner.setdefault(pod.owner_uid, set()).add(key)
        else:
            orphans.setdefault(pod.namespace, set()).add(key)
    assert state.pods_by_node == by_node
    assert state.orphans == orphans
    assert {k: v for k, v in state.pods_by_owner.items() if v} == by_owner
    by_ds: dict[str, set[str]] = {}
    for cmd in state.in_flight.values():
        by_ds.setdefault(cmd.ds_key, set()).add(cmd.command_id)
    assert state.in_flight_by_ds == by_ds


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=60).map(envelop))
def test_the_indexes_always_agree_with_the_objects(history: Stored) -> None:
    state = ClusterState()
    for seq, env in history:
        replay([(seq, env)], state)
        _check_indexes(state)
    assert state.seq == (history[-1][0] if history else 0)
