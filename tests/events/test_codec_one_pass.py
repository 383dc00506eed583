"""The one-pass decoder (``codec.decode``) against the two-pass reference (``codec.decode_two_pass``):
the same envelope from the same bytes, whatever the key order, extra fields or damage; the same error
when the bytes do not decode."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from events import codec
from events.envelope import Envelope
from events.errors import MalformedEvent
from tests.events.strategies import envelopes


def _outcome(decoder: object, data: bytes) -> Envelope | tuple[str, str]:
    assert callable(decoder)
    try:
        env = decoder(data)
        assert isinstance(env, Envelope)
        return env
    except MalformedEvent as err:
        return (err.reason, err.field)


@settings(max_examples=300, deadline=None)
@given(envelopes, st.randoms(use_true_random=False), st.booleans())
def test_any_key_order_and_extra_fields_decode_as_the_reference_does(
    env: Envelope, rnd: object, extra: bool
) -> None:
    body = msgspec.json.decode(codec.encode(env))
    items = list(body.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    if extra:
        items.insert(1, ("x_unknown", {"type": "pod.created", "data": [1]}))
    wire = json.dumps(dict(items)).encode()
    assert codec.decode(wire) == codec.decode_two_pass(wire) == env


@settings(max_examples=300, deadline=None)
@given(envelopes, st.data())
def test_damaged_bytes_give_the_reference_outcome(env: Envelope, data: st.DataObject) -> None:
    wire = bytearray(codec.encode(env))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.sampled_from(b'"{}[],:0aZ \\'))
    assert _outcome(codec.decode, bytes(wire)) == _outcome(codec.decode_two_pass, bytes(wire))


@settings(max_examples=200, deadline=None)
@given(envelopes, st.sampled_from(["type", "schema_version", "data", "id", "occurred_at"]), st.data())
def test_a_changed_or_missing_envelope_field_gives_the_reference_outcome(
    env: Envelope, key: str, data: st.DataObject
) -> None:
    body = msgspec.json.decode(codec.encode(env))
    replacement: object = data.draw(
        st.one_of(st.none(), st.integers(-1, 3), st.text(max_size=12), st.just({}), st.just("pod.ready"))
    )
    if replacement is None:
        body.pop(key)
    else:
        body[key] = replacement
    wire = json.dumps(body).encode()
    assert _outcome(codec.decode, wire) == _outcome(codec.decode_two_pass, wire)
