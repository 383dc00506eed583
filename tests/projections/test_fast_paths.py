"""The rebuild's fast paths give the state the plain paths give: the one-pass decoder against the
two-pass one, the fold's exact-type dispatch against its ``match`` fallback, and the shared pod values
(``projections.sharing``) against values of their own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from events import codec
from events.envelope import Envelope, wrap
from events.types import PodCreated
from projections import fold, snapshot
from projections.replay import replay
from tests.projections.histories import histories

Stored = list[tuple[int, Envelope]]


@settings(max_examples=150, deadline=None)
@given(histories)
def test_replaying_through_either_decoder_gives_the_same_state(history: Stored) -> None:
    wire = [(seq, codec.encode(env)) for seq, env in history]
    one_pass = replay([(seq, codec.decode(data)) for seq, data in wire])
    two_pass = replay([(seq, codec.decode_two_pass(data)) for seq, data in wire])
    assert one_pass == two_pass == replay(history)
    assert snapshot.dump(one_pass) == snapshot.dump(two_pass)


@settings(max_examples=150, deadline=None)
@given(histories)
def test_the_dispatch_table_folds_as_the_match_fallback_does(history: Stored) -> None:
    by_table = replay(history)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fold, "_HANDLERS", {})  # every event through _apply_other
        by_match = replay(history)
    assert by_table == by_match
    assert snapshot.dump(by_table) == snapshot.dump(by_match)


@settings(max_examples=100, deadline=None)
@given(histories)
def test_pods_share_equal_values_after_a_replay_and_after_a_snapshot(history: Stored) -> None:
    state = replay(history)
    restored = snapshot.load(snapshot.dump(state))
    assert restored == state
    for st in (state, restored):
        by_labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for pod in st.pods.values():
            if pod.labels:
                first = by_labels.setdefault(tuple(pod.labels.items()), pod.labels)
                assert first is pod.labels
        namespaces = {id(pod.namespace) for pod in st.pods.values()}
        assert len(namespaces) == len({pod.namespace for pod in st.pods.values()})


def test_a_pods_labels_are_not_the_events_dict() -> None:
    created = PodCreated(namespace="ns", name="p", node="n1", uid="u1", labels={"app": "a"})
    at = datetime(2026, 11, 30, tzinfo=UTC)
    state = replay([(1, wrap(created, id="e1", occurred_at=at, source="test"))])
    pod = state.pods["ns/p"]
    assert pod.labels == created.labels
    assert pod.labels is not created.labels
