"""Hypothesis strategies for every event type, built from the Structs' own type hints.

Only the leaves that JSON cannot carry faithfully are constrained: integers to int64, floats to finite
values, datetimes to UTC with microseconds, and raw pod specs to JSON-shaped mappings.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import strategies as st

from events import k8s
from events.envelope import Envelope
from events.k8s import PodTemplate, TemplateMetadata
from events.types import EVENT_TYPES, DaemonSetStatus, Event, FailedPodBackoff

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
int64 = st.integers(-(2**63), 2**63 - 1)
utc_times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
templates = st.builds(
    PodTemplate,
    metadata=st.builds(
        TemplateMetadata,
        labels=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        annotations=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
    ),
    spec=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)

_leaf_overrides: dict[type, st.SearchStrategy[Any]] = {
    PodTemplate: templates,
    DaemonSetStatus: st.builds(
        DaemonSetStatus, **{f: st.integers(0, 10**6) for f in DaemonSetStatus.__struct_fields__}
    ),
    FailedPodBackoff: st.builds(
        FailedPodBackoff,
        node=st.text(max_size=8),
        generation=st.integers(0, 10**6),
        delay_seconds=st.floats(0, 900, allow_nan=False),
        until=utc_times,
    ),
    datetime: utc_times,
    int: int64,
    float: st.floats(allow_nan=False, allow_infinity=False),
}


def _all_fields(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Build a Struct passing every field explicitly: hypothesis would otherwise pass msgspec's default
    factory sentinel for optional mutable fields of nested Structs."""
    hints = typing.get_type_hints(cls)
    return st.builds(
        cls, **{f: st.deferred(lambda h=hints[f]: st.from_type(h)) for f in cls.__struct_fields__}
    )


def _register() -> None:
    for cls, strategy in _leaf_overrides.items():
        st.register_type_strategy(cls, strategy)
    for obj in vars(k8s).values():
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj not in _leaf_overrides:
            st.register_type_strategy(obj, _all_fields(obj))


_register()


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    return st.builds(cls)


any_event: st.SearchStrategy[Event] = st.one_of([events_of(c) for c in EVENT_TYPES])

envelopes = st.builds(
    lambda ev, id_, at, src, cause: Envelope(
        id=id_,
        type=ev.TAG,
        schema_version=ev.VERSION,
        occurred_at=at,
        source=src,
        data=ev,
        causation_id=cause,
        correlation_id=id_,
    ),
    any_event,
    st.uuids().map(str),
    utc_times,
    st.text(max_size=10),
    st.text(max_size=10),
)
